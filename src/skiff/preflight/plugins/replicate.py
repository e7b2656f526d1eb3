"""Replicate (r8.im): images go to ``r8.im/OWNER/MODEL``, linux/amd64 only.

A model that does not exist yet is no refusal: Replicate creates it on the first push (as Cog
itself has it since it dropped its own existence check). With ``REPLICATE_API_TOKEN`` the model
check asks Replicate's HTTP API whether the model exists and, when it does not, whether the
owner is the token's own account; without a token it is skipped (the registry's own answers
still decide).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from skiff.preflight.check import Check, CheckFailed, CheckResult, CheckSkipped, Context
from skiff.preflight.plugins.base import HostPlatform, failed_for_login, failed_for_permission

API_URL = "https://api.replicate.com"
# Where Replicate's HTTP API is: the tests point it at a stand-in on 127.0.0.1.
API_URL_ENV = "SKIFF_REPLICATE_API_URL"
TOKEN_PAGE = "https://replicate.com/auth/token"
# Replicate runs linux/amd64 images only (Cog always builds for it).
SERVED_PLATFORM = "linux/amd64"


def api_url() -> str:
    return (os.environ.get(API_URL_ENV) or API_URL).rstrip("/")


@dataclass
class ServedPlatform:
    """r8.im serves linux/amd64 only: an image for another platform would upload in full and
    then never run, so it is refused before any build. Needs no network."""

    name: str = "platform"

    def run(self, context: Context) -> str:
        wanted = context.intent.platform
        if "/".join(wanted.split("/")[:2]) != SERVED_PLATFORM:
            raise CheckFailed(
                f"Replicate runs {SERVED_PLATFORM} images only, not {wanted}",
                f"push to r8.im without --platform (or with --platform {SERVED_PLATFORM})",
            )
        return f"{wanted}, the platform Replicate runs"


@dataclass
class ModelExists:
    """Asks Replicate's API about the model: there already, or to be created on the first push
    by the token's own account. An owner the token can neither be nor see is told now, not
    after the upload."""

    api_url: str = field(default_factory=api_url)
    name: str = "replicate model"
    timeout: float = 3.0

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        token = os.environ.get("REPLICATE_API_TOKEN")
        if not token:
            raise CheckSkipped(
                "set REPLICATE_API_TOKEN to check the model and its owner on Replicate"
            )
        path = ref.repository.path
        owner, _, model = path.partition("/")
        status, _ = self._get(f"/v1/models/{path}", token)
        if status == 200:
            return f"model {path} exists on Replicate"
        if status != 404:
            raise CheckSkipped(f"Replicate's API answered HTTP {status}")
        status, account = self._get("/v1/account", token)
        if status != 200 or not isinstance(account, dict):
            raise CheckSkipped(
                f"model {path} does not exist yet: Replicate creates it on the first push "
                f"(the token's account could not be read: HTTP {status})"
            )
        username = str(account.get("username") or "")
        kind = str(account.get("type") or "user")
        if username == owner:
            return (
                f"model {path} does not exist yet: Replicate creates it on the first push, "
                f"under your account {owner}"
            )
        if kind == "organization":
            # An organisation's token acts for that organisation alone.
            raise CheckFailed(
                f"model {path} does not exist, and REPLICATE_API_TOKEN belongs to the "
                f"organization {username!r}, not to {owner!r}: Replicate will not create it",
                f"push to r8.im/{username}/{model}, or use a token of {owner!r}",
            )
        if context.intent.new_repository:
            # Replicate's API does not list a user's organisations: --new is the user's word.
            return (
                f"model {path} does not exist yet: Replicate creates it on the first push if "
                f"{username!r} belongs to the organisation {owner!r} (--new)"
            )
        raise CheckFailed(
            f"model {path} does not exist, and {owner!r} is not the account of "
            f"REPLICATE_API_TOKEN ({username!r}) nor visible to it: Replicate will not "
            "create it there",
            f"check the owner's spelling, or push to r8.im/{username}/{model}; if {owner!r} is "
            "an organisation you belong to, add --new (or create the model first at "
            "https://replicate.com/create)",
        )

    def _get(self, path: str, token: str) -> tuple[int, Any]:
        import httpx  # only when there is a token to ask with

        try:
            response = httpx.get(
                f"{self.api_url}{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise CheckSkipped(
                f"Replicate's API could not be reached ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise CheckFailed(
                f"Replicate's API refused REPLICATE_API_TOKEN (HTTP {response.status_code})",
                f"get a valid token at {TOKEN_PAGE}",
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body


class Replicate(HostPlatform):
    name = "replicate"
    hosts = ("r8.im",)

    def __init__(self, api_url: str | None = None) -> None:
        self.api_url = api_url

    def local_checks(self) -> list[Check]:
        return [ServedPlatform()]

    def checks(self) -> list[Check]:
        return [ModelExists(self.api_url) if self.api_url else ModelExists()]

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
                    f"you belong to; '{owner}' is not one of them"
                ),
            )
        return result


def platform() -> Replicate:
    return Replicate()
