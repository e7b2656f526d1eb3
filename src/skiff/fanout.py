"""One model, several destinations: ``skiff push REF1 REF2 ...``.

Every destination is checked before any build work, and any refusal stops the push then, naming
each refused destination and why. Then the model is built (once: the later destinations find
every layer in the build cache) and pushed to each in turn. Where two destinations share a
registry, the later one mounts the blobs from the earlier instead of uploading them again. A
destination whose upload fails does not stop the others; running the same push again uploads
only what each one still lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from skiff import reference as refs
from skiff.destinations import Resolved
from skiff.errors import DestinationRejected, InvalidInput, SkiffError, UploadFailed
from skiff.preflight import CheckResult, Intent, Report, Severity, Status, run_preflight
from skiff.push import PushEvents, PushOptions, PushResult, QuietEvents, push


@dataclass
class Delivery:
    """What became of one destination."""

    destination: Resolved
    result: PushResult | None = None
    error: SkiffError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "destination": self.destination.name,
            "reference": self.destination.reference,
        }
        if self.result is not None:
            document.update(self.result.to_json())
            document["reference"] = str(self.result.reference)
        else:
            assert self.error is not None
            document.update({"ok": False, "error": self.error.message, "hint": self.error.hint})
        return document


class SeveralRefused(DestinationRejected):
    """Preflight refused one destination or more; nothing was built or written anywhere."""

    def __init__(self, reports: list[tuple[Resolved, Report]]) -> None:
        self.reports = reports
        refused = [(d, r.failure) for d, r in reports if r.failure is not None]
        reasons = "; ".join(f"{d.describe()}: {f.message}" for d, f in refused if f)
        count = (
            f"{len(refused)} of {len(reports)} destinations"
            if len(reports) > 1
            else ("the destination")
        )
        # For people, who see each refusal above it; the message names them for scripts.
        self.summary = f"{count} refused, nothing was built or pushed"
        super().__init__(
            f"{self.summary}: {reasons}",
            "fix each refused destination (or leave it out), then push again",
        )
        # Input mistakes (a bad reference, an invalid cog.yaml) only: that is exit 2.
        self.input_only = all(f is not None and f.severity is Severity.INPUT for _, f in refused)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": False,
            "error": self.message,
            "hint": self.hint,
            "destinations": [
                {"destination": d.name, **report.to_json()} for d, report in self.reports
            ],
        }


def unique(destinations: Sequence[Resolved]) -> list[Resolved]:
    """Each destination once, in the order given (a name and its reference are one)."""
    seen: set[str] = set()
    kept: list[Resolved] = []
    for destination in destinations:
        try:
            key = str(refs.parse(destination.reference))
        except refs.ReferenceError:
            key = destination.reference  # preflight tells what is wrong with it
        if key not in seen:
            seen.add(key)
            kept.append(destination)
    return kept


def push_all(
    folder: Path,
    destinations: Sequence[Resolved],
    options: PushOptions | None = None,
    *,
    events: PushEvents | None = None,
    on_destination: Callable[[Resolved, str], None] | None = None,
) -> list[Delivery]:
    """Check every destination, then build once and push to each. Raises SeveralRefused if
    preflight refuses any (before any build work); a build failure raises (no destination can
    get the image); an upload failure is that destination's Delivery.error, and the others go on.
    ``on_destination(destination, phase)``: "checking", then "pushing", for the user."""
    options = options or PushOptions()
    events = events or QuietEvents()
    tell = on_destination or (lambda _d, _phase: None)
    intent = Intent(str(options.build.platform), options.new_repository)
    reports: list[tuple[Resolved, Report]] = []
    for destination in destinations:
        tell(destination, "checking")
        report = run_preflight(
            destination.reference, model_dir=folder, on_result=events.check, intent=intent
        )
        reports.append((destination, report))
    if any(not report.ok for _, report in reports):
        raise SeveralRefused(reports)

    deliveries: list[Delivery] = []
    held: dict[str, list[str]] = {}  # registry -> repositories that hold the image now
    quiet = _WithoutChecks(events)
    for destination, report in reports:
        tell(destination, "pushing")
        repository = refs.parse(report.reference).repository
        earlier = tuple(reversed(held.get(repository.registry, [])))
        # Preflight has decided for every destination above, with the user's --new: the check
        # each push repeats must not take an earlier destination of this push for a typo.
        each = replace(options, new_repository=True, mount_from=earlier)
        try:
            result = push(folder, destination.reference, each, events=quiet)
        except (UploadFailed, DestinationRejected, InvalidInput) as exc:
            deliveries.append(Delivery(destination, error=exc))
            continue
        held.setdefault(repository.registry, []).append(repository.path)
        deliveries.append(Delivery(destination, result))
    return deliveries


class _WithoutChecks:
    """The push's events, without its repeated preflight (each destination is told once)."""

    def __init__(self, events: PushEvents) -> None:
        self.events = events

    def check(self, result: CheckResult) -> None:
        if result.status is Status.FAILED:  # what changed since the first check must be told
            self.events.check(result)

    def status(self, text: str) -> None:
        self.events.status(text)

    def blob_started(self, key: object, size: int | None, role: str) -> None:
        self.events.blob_started(key, size, role)

    def blob_progress(self, key: object, done: int) -> None:
        self.events.blob_progress(key, done)

    def blob_finished(self, key: object, result: Any, role: str) -> None:
        self.events.blob_finished(key, result, role)
