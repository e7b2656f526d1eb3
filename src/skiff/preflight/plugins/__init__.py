"""Platform plugins and third-party checks, found through the ``skiff.preflight`` entry points.

An entry point may name a ``Platform`` (matches/checks/refine: knowledge of one registry
service) or a plain ``Check`` that runs for every destination, or a callable returning either.
skiff's own platforms register the same way, in its pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.preflight.check import Check, CheckSkipped, Context, Platform

GROUP = "skiff.preflight"


@dataclass
class _BrokenExtension:
    """Stands in for an extension that failed to load, so the user hears of it."""

    name: str
    problem: str

    def run(self, context: Context) -> str:
        raise CheckSkipped(f"extension failed to load: {self.problem}")


def load_extensions() -> tuple[list[Check], list[Platform]]:
    from importlib.metadata import entry_points  # reads every installed package's metadata

    checks: list[Check] = []
    platforms: list[Platform] = []
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, Platform | Check):
                loaded = loaded()
        except Exception as exc:  # a third party's bug must not stop a push
            checks.append(_BrokenExtension(entry.name, f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(loaded, Platform):
            platforms.append(loaded)
        elif isinstance(loaded, Check):
            checks.append(loaded)
        else:
            checks.append(_BrokenExtension(entry.name, "not a Platform or a Check"))
    return checks, platforms
