from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, text: str) -> str:
        raise ValueError(f"cannot handle {text}")
