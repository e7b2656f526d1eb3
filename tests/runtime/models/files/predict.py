import tempfile

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, document: Path = Input(description="A text file")) -> Path:
        out = Path(tempfile.mkdtemp()) / "upper.txt"
        out.write_text(document.read_text().upper())
        return out
