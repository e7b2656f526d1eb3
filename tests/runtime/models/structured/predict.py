import six
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, words: list[str], scale: float = 1.0) -> dict:
        # six comes from python_packages: the model's own requirements are installed.
        count = len(words) * scale
        return {"count": count, "first": words[0], "six": six.__version__, "tag": "<a&b>"}
