from cog import current_scope


def run(name: str = "world") -> str:
    context = current_scope().context
    who = context.get("user", "nobody")
    return f"hello {name} (asked by {who})"
