import os

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, name: str) -> str:
        return f"ENV[{name}]={os.environ[name]}"
