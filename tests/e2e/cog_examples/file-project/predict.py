import tempfile

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def setup(self):
        self.prefix = "foo"

    def predict(self, text: str, path: Path) -> Path:
        content = self.prefix + text + path.read_text()
        out = Path(tempfile.mkdtemp()) / "output.txt"
        out.write_text(content)
        return out
