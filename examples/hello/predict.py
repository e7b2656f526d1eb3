"""A toy "model": a byte-level table loaded from weights/table.bin scores the input text."""

import hashlib
from pathlib import Path as FsPath

from cog import BasePredictor, Input

WEIGHTS = FsPath(__file__).parent / "weights" / "table.bin"


class Predictor(BasePredictor):
    def setup(self) -> None:
        """Load the weights once, as a real model would."""
        self.table = WEIGHTS.read_bytes()
        self.fingerprint = hashlib.sha256(self.table).hexdigest()[:12]

    def predict(
        self,
        text: str = Input(description="Text to score"),
        repeat: int = Input(description="How many times to repeat the text", default=1, ge=1, le=5),
    ) -> str:
        """Score the text against the table and echo it back."""
        score = sum(self.table[(i * 256 + b) % len(self.table)] for i, b in enumerate(text.encode()))
        return f"{text * repeat} (score {score}, weights {self.fingerprint})"
