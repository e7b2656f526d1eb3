from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        raise RuntimeError("the weights are missing")

    def predict(self, text: str) -> str:
        return text
