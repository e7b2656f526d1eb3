"""Shared behaviour of the built-in platforms: match by host, add hints to failures."""

from __future__ import annotations

from dataclasses import replace

from skiff.preflight.check import Check, CheckResult, Context
from skiff.reference import Reference


class HostPlatform:
    """A platform recognised by its registry host; subclasses override ``hint_for``."""

    name = "platform"
    hosts: tuple[str, ...] = ()

    def matches(self, reference: Reference) -> bool:
        return reference.repository.registry in self.hosts

    def checks(self) -> list[Check]:
        return []

    def local_checks(self) -> list[Check]:
        return []

    def refine(self, context: Context, result: CheckResult) -> CheckResult:
        assert context.reference is not None
        better = self.hint_for(context, result)
        if better is None:
            return result
        return replace(result, hint=better)

    def hint_for(self, context: Context, result: CheckResult) -> str | None:
        return None


def failed_for_login(result: CheckResult) -> bool:
    return result.name == "credentials" or (
        result.name == "write access" and "requires a login" in result.message
    )


def failed_for_permission(result: CheckResult) -> bool:
    return result.name in ("token scope", "write access") and "may not push" in result.message
