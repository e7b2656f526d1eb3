"""Where a registry's credentials come from: Docker's config file and credential helpers."""

from skiff.auth.credentials import (
    ANONYMOUS,
    CredentialConfigError,
    CredentialHelperError,
    CredentialHelperNotFound,
    Credentials,
)
from skiff.auth.dockerconfig import (
    DOCKER_HUB_KEY,
    config_dir,
    config_path,
    erase,
    resolve,
    server_key,
    store,
)

__all__ = [
    "ANONYMOUS",
    "DOCKER_HUB_KEY",
    "CredentialConfigError",
    "CredentialHelperError",
    "CredentialHelperNotFound",
    "Credentials",
    "config_dir",
    "config_path",
    "erase",
    "resolve",
    "server_key",
    "store",
]
