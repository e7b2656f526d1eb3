"""Inputs of several types; the answer echoes each so a test can tell how it was read."""

from pathlib import Path as _Path

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        # Written by build.run with the pydantic that python_packages installed.
        self.built_with = _Path("/opt/built-with").read_text()

    def predict(
        self,
        text: str = Input(description="Some text"),
        count: int = Input(default=2, ge=1, le=10),
        scale: float = Input(default=0.5),
        loud: bool = Input(default=False),
        color: str = Input(default="red", choices=["red", "green"]),
        words: list[str] = Input(default=["a"]),
        note: str | None = Input(default=None),
    ) -> str:
        shown = text.upper() if loud else text
        return (
            f"{shown * count} scale={scale} color={color} words={'+'.join(words)}"
            f" note={note} built={self.built_with}"
        )
