from cog import Input


def run(name: str = Input(description="Who to greet")) -> str:
    return f"hello, {name}"
