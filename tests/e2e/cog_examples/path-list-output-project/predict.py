from typing import List

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self) -> List[Path]:
        paths = []
        for i, word in enumerate(["foo", "bar", "baz"]):
            path = Path(f"/tmp/out-{i}.txt")
            path.write_text(word)
            paths.append(path)
        return paths
