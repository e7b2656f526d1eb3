from typing import List  # noqa: UP035 - as upstream writes it: typing.List must work

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self) -> List[Path]:  # noqa: UP006
        paths = []
        for i, word in enumerate(["foo", "bar", "baz"]):
            path = Path(f"/tmp/out-{i}.txt")
            path.write_text(word)
            paths.append(path)
        return paths
