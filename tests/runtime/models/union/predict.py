from cog import BaseModel, BasePredictor


class Out(BaseModel):
    kind: str
    value: str


class Predictor(BasePredictor):
    def predict(self, value: str | float) -> Out:
        return Out(kind=type(value).__name__, value=str(value))
