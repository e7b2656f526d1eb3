from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.prefix = "echo: "

    def predict(
        self,
        text: str = Input(description="What to repeat"),
        times: int = Input(description="How often", default=1, ge=1),
        shout: bool = Input(default=False),
    ) -> str:
        print(f"repeating {text!r} {times} times")
        out = " ".join([text] * times)
        return self.prefix + (out.upper() if shout else out)
