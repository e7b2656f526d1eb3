"""Runs the checks in order, timing each, stopping at the first failure that makes the rest
meaningless, and lets platform plugins sharpen the message of a failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.errors import SkiffError
from skiff.preflight.builtin import destination_checks, model_checks
from skiff.preflight.check import (
    Check,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    Context,
    Intent,
    Platform,
    Severity,
    Status,
)
from skiff.preflight.plugins import load_extensions
from skiff.registry.trust import TransportOptions, prepare_ssl_context

# A registry that accepts the connection and then says nothing must not hold the user for long:
# preflight's answers are small, and a healthy registry sends them in milliseconds.
PREFLIGHT_READ_TIMEOUT = 10.0


@dataclass
class Report:
    """The outcome of a preflight: every check's result, in order."""

    reference: str
    results: list[CheckResult] = field(default_factory=list)
    elapsed_ms: float = 0.0
    tag_exists: bool | None = None
    # A destination the user more likely meant (a known one, for a typo): for scripts.
    suggestion: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.status is not Status.FAILED for r in self.results)

    @property
    def failure(self) -> CheckResult | None:
        return next((r for r in self.results if r.status is Status.FAILED), None)

    def to_json(self) -> dict[str, Any]:
        failure = self.failure
        return {
            "reference": self.reference,
            "ok": self.ok,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "checks": [r.to_json() for r in self.results],
            "error": failure.message if failure else None,
            "hint": failure.hint if failure else None,
            "suggestion": self.suggestion,
        }


def run_preflight(
    text: str,
    *,
    model_dir: Path | None = None,
    options: TransportOptions | None = None,
    extra_checks: Sequence[Check] = (),
    platforms: Sequence[Platform] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    intent: Intent | None = None,
) -> Report:
    """Check that ``text`` names a destination skiff can push to, changing nothing there.
    ``intent``: what the push means to do (its platform, whether a new repository is meant)."""
    options = options or TransportOptions.from_env(read_timeout=PREFLIGHT_READ_TIMEOUT)
    context = Context(text=text, options=options, model_dir=model_dir, intent=intent or Intent())
    # Extensions load after the reference check (which needs none of them), while the CA store
    # loads: a plugin may import httpx, which takes longer than the store.
    extensions_loaded = False
    general: list[Check] = []
    known_platforms: list[Platform] = []
    report = Report(reference=text)
    start = time.perf_counter()
    checks: list[Check] = [*destination_checks()]
    pending_platform_checks = True
    extensions: set[int] = set()  # ids of third-party checks, whose bugs must not stop a push
    failed = False
    trust_requested = False
    try:
        index = 0
        while index < len(checks):
            check = checks[index]
            index += 1
            if failed:
                result = CheckResult(check.name, Status.SKIPPED, "not run: an earlier check failed")
            else:
                result = _run_one(check, context, guarded=id(check) in extensions)
                failed = result.status is Status.FAILED
                if context.reference is not None and not trust_requested:
                    # The CA store loads in the background while the imports that follow run.
                    trust_requested = True
                    prepare_ssl_context(context.reference.repository.api_host, options)
            if not extensions_loaded:
                extensions_loaded = True
                general, known_platforms = (
                    load_extensions() if platforms is None else ([], list(platforms))
                )
            if index == 1 and context.reference is not None:
                # The platforms' checks that need only the reference: before any network.
                local: list[Check] = []
                for platform in known_platforms:
                    if platform.matches(context.reference):
                        local.extend(_local_checks(platform))
                extensions.update(id(c) for c in local)
                checks[1:1] = local
            if result.status is Status.FAILED and context.reference is not None:
                for platform in known_platforms:
                    if platform.matches(context.reference):
                        result = _refine(platform, context, result)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
            if index == len(checks) and pending_platform_checks:
                # After the destination's built-ins: the platform's own checks, the model
                # folder's, then general extensions.
                pending_platform_checks = False
                added: list[Check] = []
                if context.reference is not None:
                    for platform in known_platforms:
                        if platform.matches(context.reference):
                            added.extend(platform.checks())
                extensions.update(id(c) for c in added)
                checks.extend(added)
                checks.extend(model_checks())
                extensions.update(id(c) for c in general)
                checks.extend(general)
                checks.extend(extra_checks)
    finally:
        context.close()
    report.elapsed_ms = (time.perf_counter() - start) * 1000
    tag = context.facts.get("tag_exists")
    report.tag_exists = tag if isinstance(tag, bool) else None
    suggestion = context.facts.get("suggestion")
    report.suggestion = suggestion if isinstance(suggestion, str) else None
    if context.reference is not None:
        report.reference = str(context.reference)
    return report


def _local_checks(platform: Platform) -> list[Check]:
    """A platform's network-free checks, if it has any (the method is optional)."""
    local = getattr(platform, "local_checks", None)
    if not callable(local):
        return []
    try:
        found = local()
    except Exception:  # a plugin's bug must not stop a push
        return []
    return [c for c in found if isinstance(c, Check)] if isinstance(found, list) else []


def _refine(platform: Platform, context: Context, result: CheckResult) -> CheckResult:
    """The platform's better hint; a plugin's bug keeps the plain result instead of crashing."""
    try:
        return platform.refine(context, result)
    except Exception:
        return result


def _run_one(check: Check, context: Context, guarded: bool = False) -> CheckResult:
    """Run one check. ``guarded``: it is an extension's, so its crash is reported as a skip
    (a third party's bug must not stop a push); a built-in's crash is skiff's bug and raises."""
    start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - start) * 1000

    try:
        message = check.run(context)
    except CheckSkipped as exc:
        return CheckResult(check.name, Status.SKIPPED, exc.message, elapsed_ms=elapsed())
    except CheckFailed as exc:
        return CheckResult(
            check.name, Status.FAILED, exc.message, exc.hint, elapsed(), exc.severity
        )
    except SkiffError as exc:
        return CheckResult(check.name, Status.FAILED, exc.message, exc.hint, elapsed())
    except Exception as exc:
        if not guarded:
            raise
        return CheckResult(
            check.name,
            Status.SKIPPED,
            f"the check crashed, a bug in its extension ({type(exc).__name__}: {exc})",
            elapsed_ms=elapsed(),
        )
    return CheckResult(check.name, Status.OK, message, elapsed_ms=elapsed())


def failure_severity(report: Report) -> Severity | None:
    failure = report.failure
    return failure.severity if failure else None
