from cog import BasePredictor
from pydantic import BaseModel


class Result(BaseModel):
    word: str
    length: int
    letters: list[str]


class Predictor(BasePredictor):
    def predict(self, word: str) -> Result:
        return Result(word=word, length=len(word), letters=sorted(set(word)))
