"""Amazon ECR: repositories must be created before a push; logins expire after 12 hours."""

from __future__ import annotations

import re

from skiff.preflight.check import Check, CheckResult, Context
from skiff.preflight.plugins.base import failed_for_login, failed_for_permission
from skiff.reference import Reference

_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


class ECR:
    name = "ecr"

    def matches(self, reference: Reference) -> bool:
        return _ECR_HOST.match(reference.repository.registry) is not None

    def checks(self) -> list[Check]:
        return []

    def refine(self, context: Context, result: CheckResult) -> CheckResult:
        from dataclasses import replace

        assert context.reference is not None
        repo = context.reference.repository
        match = _ECR_HOST.match(repo.registry)
        assert match is not None
        region = match.group("region")
        if result.name == "write access" and "does not exist" in result.message:
            return replace(
                result,
                hint=(
                    f"create it: aws ecr create-repository --repository-name {repo.path} "
                    f"--region {region}"
                ),
            )
        if failed_for_login(result):
            return replace(
                result,
                hint=(
                    f"log in (ECR logins last 12 hours): aws ecr get-login-password --region "
                    f"{region} | skiff login {repo.registry} -u AWS --password-stdin"
                ),
            )
        if failed_for_permission(result):
            return replace(
                result,
                hint=(
                    "the IAM identity needs ecr:InitiateLayerUpload, ecr:UploadLayerPart, "
                    "ecr:CompleteLayerUpload and ecr:PutImage on this repository"
                ),
            )
        return result


def platform() -> ECR:
    return ECR()
