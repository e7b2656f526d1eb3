"""Slow on purpose: setup() stands for loading weights, predict() for a long generation."""

import time

from cog import BasePredictor, Input

SETUP_SECONDS = 1.5


class Predictor(BasePredictor):
    def setup(self) -> None:
        time.sleep(SETUP_SECONDS)

    def predict(
        self, seconds: float = Input(description="How long to work", default=30, ge=0, le=120)
    ) -> str:
        # Short sleeps: a cancel is raised in this thread between two of them.
        deadline = time.monotonic() + seconds
        print("working", flush=True)
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return "finished"
