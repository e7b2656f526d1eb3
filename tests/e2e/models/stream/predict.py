from collections.abc import Iterator

import cog
from cog import BasePredictor


class Predictor(BasePredictor):
    @cog.streaming
    def predict(self, n: int = 3) -> Iterator[str]:
        for i in range(n):
            yield f"token{i} "
