"""Preflight: prove, before any build work, that a push to a destination will be accepted."""

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
from skiff.preflight.runner import Report, run_preflight

__all__ = [
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Context",
    "Intent",
    "Platform",
    "Report",
    "Severity",
    "Status",
    "run_preflight",
]
