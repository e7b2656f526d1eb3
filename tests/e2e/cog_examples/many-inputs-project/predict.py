from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        no_default: str,
        default_without_input: str = "default",
        input_with_default: int = Input(default=10),
        path: Path = Input(description="Some path"),
        image: Path = Input(description="Some path"),
        choices: str = Input(choices=["foo", "bar"]),
        int_choices: int = Input(description="hello", choices=[3, 4, 5]),
    ) -> str:
        words = [
            no_default,
            default_without_input,
            str(input_with_default * 2),
            path.read_text(),
            str(image).rsplit(".", 1)[-1],
            choices,
            str(int_choices * 2),
        ]
        return " ".join(words)
