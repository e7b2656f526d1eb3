"""Docker Hub: namespaces are user or organisation names; ``library/`` is for official images."""

from __future__ import annotations

from skiff.preflight.check import CheckResult, Context
from skiff.preflight.plugins.base import HostPlatform, failed_for_login, failed_for_permission


class DockerHub(HostPlatform):
    name = "docker hub"
    hosts = ("docker.io",)

    def hint_for(self, context: Context, result: CheckResult) -> str | None:
        assert context.reference is not None
        path = context.reference.repository.path
        namespace, _, name = path.partition("/")
        if failed_for_login(result):
            return (
                "log in with your Docker Hub user and an access token "
                "(https://app.docker.com/settings/personal-access-tokens): "
                "skiff login docker.io -u USERNAME --password-stdin"
            )
        if failed_for_permission(result):
            if namespace == "library":
                return (
                    f"'{name}' alone means docker.io/library/{name}, reserved for Docker's "
                    f"official images: push to docker.io/YOUR_USERNAME/{name}"
                )
            return (
                f"on Docker Hub you can push only under your user name or an organisation "
                f"you belong to, with a token that has write access; '{namespace}' is not one "
                f"of yours, or the token is read-only"
            )
        return None


def platform() -> DockerHub:
    return DockerHub()
