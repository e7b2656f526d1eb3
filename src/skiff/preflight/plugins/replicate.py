"""Replicate (r8.im): images go to ``r8.im/OWNER/MODEL`` and the model must exist first.

The model check uses Replicate's HTTP API with ``REPLICATE_API_TOKEN``; without a token it is
skipped (the registry's own answer still decides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import httpx

from skiff.preflight.check import Check, CheckFailed, CheckResult, CheckSkipped, Context
from skiff.preflight.plugins.base import HostPlatform, failed_for_login, failed_for_permission

API_URL = "https://api.replicate.com"
TOKEN_PAGE = "https://replicate.com/auth/token"


@dataclass
class ModelExists:
    """Asks Replicate's API whether the model exists, since r8.im cannot create it on push."""

    api_url: str = API_URL
    name: str = "replicate model"
    timeout: float = 3.0

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        token = os.environ.get("REPLICATE_API_TOKEN")
        if not token:
            raise CheckSkipped("set REPLICATE_API_TOKEN to check that the model exists")
        path = ref.repository.path
        try:
            response = httpx.get(
                f"{self.api_url}/v1/models/{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise CheckSkipped(
                f"Replicate's API could not be reached ({type(exc).__name__})"
            ) from None
        if response.status_code == 200:
            return f"model {path} exists on Replicate"
        if response.status_code == 404:
            owner, _, model = path.partition("/")
            raise CheckFailed(
                f"model {path} does not exist on Replicate",
                f"create it first at https://replicate.com/create (owner {owner}, name {model})",
            )
        if response.status_code in (401, 403):
            raise CheckFailed(
                f"Replicate's API refused REPLICATE_API_TOKEN (HTTP {response.status_code})",
                f"get a valid token at {TOKEN_PAGE}",
            )
        raise CheckSkipped(f"Replicate's API answered HTTP {response.status_code}")


class Replicate(HostPlatform):
    name = "replicate"
    hosts = ("r8.im",)

    def __init__(self, api_url: str = API_URL) -> None:
        self.api_url = api_url

    def checks(self) -> list[Check]:
        return [ModelExists(self.api_url)]

    def refine(self, context: Context, result: CheckResult) -> CheckResult:
        if failed_for_login(result):
            return replace(
                result,
                hint=(
                    f"copy your API token from {TOKEN_PAGE}, then: "
                    "skiff login r8.im -u YOUR_REPLICATE_USERNAME --password-stdin"
                ),
            )
        if failed_for_permission(result):
            assert context.reference is not None
            owner = context.reference.repository.path.split("/", 1)[0]
            return replace(
                result,
                hint=(
                    f"you can push only to models of your own account or of an organisation "
                    f"you belong to; '{owner}' is not one of them, or the model does not exist "
                    "yet (create it at https://replicate.com/create)"
                ),
            )
        return result


def platform() -> Replicate:
    return Replicate()
