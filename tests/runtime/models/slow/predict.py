import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, seconds: float = 600.0) -> str:
        print("started", flush=True)
        time.sleep(seconds)
        return "done"
