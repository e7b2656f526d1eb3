from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, value: str | float = Input(description="text or a number")) -> str:
        return f"{type(value).__name__}:{value}"
