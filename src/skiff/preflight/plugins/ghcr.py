"""GitHub Container Registry: tokens need ``write:packages``; packages have their own access."""

from __future__ import annotations

from skiff.preflight.check import CheckResult, Context
from skiff.preflight.plugins.base import HostPlatform, failed_for_login, failed_for_permission


class GHCR(HostPlatform):
    name = "ghcr"
    hosts = ("ghcr.io",)

    def hint_for(self, context: Context, result: CheckResult) -> str | None:
        assert context.reference is not None
        owner = context.reference.repository.path.split("/", 1)[0]
        if failed_for_login(result):
            return (
                "log in with a GitHub token that has the write:packages scope: "
                "echo $GITHUB_TOKEN | skiff login ghcr.io -u USERNAME --password-stdin"
            )
        if failed_for_permission(result):
            return (
                f"the token needs the write:packages scope, and you need write access to the "
                f"package under '{owner}'; if the package already exists, give your account (or "
                f"the repository running this workflow) write access in the package's settings"
            )
        return None


def platform() -> GHCR:
    return GHCR()
