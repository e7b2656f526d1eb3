"""skiff.auth against real config files and real credential-helper programs (written per test)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.auth import (
    ANONYMOUS,
    DOCKER_HUB_KEY,
    CredentialConfigError,
    CredentialHelperError,
    CredentialHelperNotFound,
    Credentials,
    config_dir,
    config_path,
    erase,
    resolve,
    store,
)
from skiff.auth.helpers import helper_erase, helper_get, helper_store
from skiff.errors import InvalidInput, SkiffError

SECRET = "hunter2-very-secret"

# A credential helper speaking the docker-credential-helpers protocol, keeping its secrets in a
# JSON file and logging each call (action and server URL only) so tests can see what was asked.
_FAKE_HELPER = """#!{python}
import json, sys
STORE, LOG = {store!r}, {log!r}
action, data = sys.argv[1], sys.stdin.read()
try:
    with open(STORE) as f:
        creds = json.load(f)
except FileNotFoundError:
    creds = {{}}
url = json.loads(data)["ServerURL"] if action == "store" else data.strip()
with open(LOG, "a") as f:
    f.write(action + " " + url + "\\n")
if action == "store":
    req = json.loads(data)
    creds[url] = {{"Username": req["Username"], "Secret": req["Secret"]}}
elif url not in creds:
    print("credentials not found in native keychain")
    sys.exit(1)
elif action == "get":
    print(json.dumps(dict(ServerURL=url, **creds[url])))
    sys.exit(0)
elif action == "erase":
    del creds[url]
with open(STORE, "w") as f:
    json.dump(creds, f)
"""


class FakeHelper:
    """A working docker-credential-NAME on PATH, with its store and call log inspectable."""

    def __init__(self, bin_dir: Path, name: str) -> None:
        self.name = name
        self.store_path = bin_dir / f"{name}-store.json"
        self.log_path = bin_dir / f"{name}-calls.log"
        script = _FAKE_HELPER.format(
            python=sys.executable, store=str(self.store_path), log=str(self.log_path)
        )
        _install(bin_dir, name, script)

    def put(self, url: str, username: str, secret: str) -> None:
        creds = self.held()
        creds[url] = {"Username": username, "Secret": secret}
        self.store_path.write_text(json.dumps(creds))

    def held(self) -> dict[str, dict[str, str]]:
        if not self.store_path.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self.store_path.read_text())
        return data

    def calls(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []


def _install(bin_dir: Path, name: str, script: str) -> Path:
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(script)
    path.chmod(0o755)
    return path


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "docker"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ.get('PATH', '')}")
    return path


@pytest.fixture
def write_config(cfg_dir: Path) -> Callable[[object], Path]:
    def write(data: object) -> Path:
        path = cfg_dir / "config.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    return write


def b64(text: str, *, pad: bool = True) -> str:
    encoded = base64.b64encode(text.encode()).decode()
    return encoded if pad else encoded.rstrip("=")


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    texts = [str(exc), repr(exc), *map(str, exc.args)]
    if isinstance(exc, SkiffError):
        texts += [exc.message, exc.hint or ""]
    for secret in secrets or (SECRET,):
        for text in texts:
            assert secret not in text


# --- where the file is -------------------------------------------------------------------------


def test_config_dir_from_env_else_home(
    cfg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config_dir() == cfg_dir
    assert config_path() == cfg_dir / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == tmp_path / ".docker" / "config.json"


def test_missing_or_empty_file_is_anonymous(
    cfg_dir: Path, write_config: Callable[[object], Path]
) -> None:
    assert resolve("ghcr.io") is ANONYMOUS
    write_config("  \n")
    assert resolve("ghcr.io") is ANONYMOUS


# --- reading auths -----------------------------------------------------------------------------


def test_auth_entry_gives_basic_credentials(write_config: Callable[[object], Path]) -> None:
    path = write_config({"auths": {"ghcr.io": {"auth": b64(f"alice:{SECRET}")}}})
    creds = resolve("ghcr.io")
    assert (creds.username, creds.password) == ("alice", SECRET)
    assert not creds.anonymous
    assert str(path) in creds.source and "ghcr.io" in creds.source
    assert SECRET not in creds.source


def test_password_may_contain_colons_and_padding_may_be_missing(
    write_config: Callable[[object], Path],
) -> None:
    write_config({"auths": {"ghcr.io": {"auth": b64("al:pa:ss", pad=False)}}})
    assert b64("al:pa:ss") != b64("al:pa:ss", pad=False)
    creds = resolve("ghcr.io")
    assert (creds.username, creds.password) == ("al", "pa:ss")


def test_username_and_password_fields(write_config: Callable[[object], Path]) -> None:
    write_config({"auths": {"quay.io": {"username": "bob", "password": SECRET}}})
    creds = resolve("quay.io")
    assert (creds.username, creds.password) == ("bob", SECRET)


@pytest.mark.parametrize(
    "key",
    [
        DOCKER_HUB_KEY,
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://registry-1.docker.io/v2/",
        "https://index.docker.io/v1",
    ],
)
@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases(
    write_config: Callable[[object], Path], key: str, registry: str
) -> None:
    write_config({"auths": {key: {"auth": b64(f"hubuser:{SECRET}")}}})
    assert resolve(registry).password == SECRET


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("https://ghcr.io", "ghcr.io"),
        ("http://ghcr.io/v1/", "ghcr.io"),
        ("GHCR.io", "ghcr.io"),
        ("localhost:5000", "localhost:5000"),
        ("http://localhost:5000/v2/", "localhost:5000"),
        ("https://127.0.0.1:5443", "127.0.0.1:5443"),
    ],
)
def test_keys_with_scheme_path_or_case(
    write_config: Callable[[object], Path], key: str, registry: str
) -> None:
    write_config({"auths": {key: {"auth": b64(f"u:{SECRET}")}}})
    assert resolve(registry).password == SECRET


def test_other_hosts_and_ports_do_not_match(write_config: Callable[[object], Path]) -> None:
    write_config(
        {
            "auths": {
                "ghcr.io": {"auth": b64("u:p")},
                "localhost:5000": {"auth": b64("u:p")},
                "https://index.docker.io/v1/": {"auth": b64("u:p")},
            }
        }
    )
    for registry in (
        "quay.io",
        "localhost",
        "localhost:5001",
        "ghcr.io.evil.example",
        "docker.com",
    ):
        assert resolve(registry) is ANONYMOUS, registry


def test_dockers_own_key_wins_over_aliases(write_config: Callable[[object], Path]) -> None:
    write_config(
        {
            "auths": {
                "docker.io": {"auth": b64("old:stale")},
                DOCKER_HUB_KEY: {"auth": b64(f"new:{SECRET}")},
            }
        }
    )
    assert resolve("docker.io").username == "new"


def test_identity_and_registry_tokens(write_config: Callable[[object], Path]) -> None:
    write_config(
        {
            "auths": {
                "myacr.azurecr.io": {"auth": b64("<token>:"), "identitytoken": SECRET},
                "tokens.example": {"registrytoken": SECRET},
            }
        }
    )
    acr = resolve("myacr.azurecr.io")
    assert (acr.username, acr.password, acr.identity_token) == ("<token>", None, SECRET)
    assert not acr.anonymous
    direct = resolve("tokens.example")
    assert direct.registry_token == SECRET and not direct.anonymous


def test_empty_entry_is_anonymous(write_config: Callable[[object], Path]) -> None:
    write_config({"auths": {"ghcr.io": {}, "quay.io": {"auth": ""}}, "credsStore": ""})
    assert resolve("ghcr.io") is ANONYMOUS
    assert resolve("quay.io") is ANONYMOUS


def test_broken_entry_for_another_registry_does_not_matter(
    write_config: Callable[[object], Path],
) -> None:
    write_config({"auths": {"quay.io": {"auth": "!!!"}, "ghcr.io": {"auth": b64("u:p")}}})
    assert resolve("ghcr.io").password == "p"


# --- malformed files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"auths": {"ghcr.io": {"password": "' + SECRET + '"}', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"auths": ["ghcr.io"]}, '"auths"'),
        ({"auths": {"ghcr.io": SECRET}}, "must be an object"),
        ({"auths": {"ghcr.io": {"auth": 12}}}, '"auth" must be a string'),
        ({"auths": {"ghcr.io": {"password": ["x"]}}}, '"password" must be a string'),
        ({"auths": {"ghcr.io": {"auth": SECRET + "!!"}}}, "not valid base64"),
        ({"auths": {"ghcr.io": {"auth": "a"}}}, "not valid base64"),
        ({"auths": {"ghcr.io": {"auth": base64.b64encode(b"\xff\xfe:x").decode()}}}, "base64"),
        ({"auths": {"ghcr.io": {"auth": b64(SECRET)}}}, "USER:PASSWORD"),
        ({"credsStore": 7}, '"credsStore"'),
        ({"credHelpers": {"ghcr.io": 7}}, '"credHelpers"'),
        ({"credHelpers": "pass"}, '"credHelpers"'),
    ],
)
def test_malformed_config_is_reported_without_secrets(
    write_config: Callable[[object], Path], content: object, problem: str
) -> None:
    path = write_config(content)
    with pytest.raises(CredentialConfigError) as info:
        resolve("ghcr.io")
    assert isinstance(info.value, InvalidInput)
    assert str(path) in info.value.message
    assert problem in info.value.message
    assert info.value.hint
    assert_no_secret(info.value, SECRET, b64(SECRET))


def test_unreadable_config_is_reported(cfg_dir: Path) -> None:
    (cfg_dir / "config.json").mkdir()  # a directory where the file should be
    with pytest.raises(CredentialConfigError, match="cannot read"):
        resolve("ghcr.io")


# --- helpers in the lookup order ---------------------------------------------------------------


def test_resolution_order(write_config: Callable[[object], Path], bin_dir: Path) -> None:
    specific, general = FakeHelper(bin_dir, "specific"), FakeHelper(bin_dir, "general")
    specific.put("ghcr.io", "from-specific", "s1")
    general.put("ghcr.io", "from-general", "s2")
    general.put("quay.io", "from-general", "s3")
    write_config(
        {
            "credHelpers": {"ghcr.io": "specific", "nothing.example": "specific"},
            "credsStore": "general",
            "auths": {
                "ghcr.io": {"auth": b64("from-file:f1")},
                "quay.io": {"auth": b64("from-file:f2")},
                "file.example": {"auth": b64("from-file:f3")},
            },
        }
    )
    # credHelpers[host] first; credsStore is then not asked at all (as in Docker).
    ghcr = resolve("ghcr.io")
    assert (ghcr.username, ghcr.password) == ("from-specific", "s1")
    assert "docker-credential-specific" in ghcr.source
    assert general.calls() == []
    # credsStore for hosts without their own helper, before the file.
    assert resolve("quay.io").username == "from-general"
    # A helper with nothing to say falls through to the auths entry, then to anonymous.
    assert resolve("file.example").username == "from-file"
    assert resolve("nothing.example") is ANONYMOUS
    assert resolve("unknown.example") is ANONYMOUS
    assert specific.calls() == ["get ghcr.io", "get nothing.example"]
    assert general.calls() == ["get quay.io", "get file.example", "get unknown.example"]


def test_helper_is_asked_with_dockers_hub_key(
    write_config: Callable[[object], Path], bin_dir: Path
) -> None:
    helper = FakeHelper(bin_dir, "hub")
    helper.put(DOCKER_HUB_KEY, "hubuser", SECRET)
    write_config({"credHelpers": {"docker.io": "hub"}})
    assert resolve("docker.io").password == SECRET
    assert helper.calls() == [f"get {DOCKER_HUB_KEY}"]


def test_helper_identity_token(write_config: Callable[[object], Path], bin_dir: Path) -> None:
    helper = FakeHelper(bin_dir, "acr")
    helper.put("myacr.azurecr.io", "<token>", SECRET)
    write_config({"credsStore": "acr"})
    creds = resolve("myacr.azurecr.io")
    assert (creds.identity_token, creds.password) == (SECRET, None)


def test_missing_helper_names_program_and_config_entry(
    write_config: Callable[[object], Path], bin_dir: Path
) -> None:
    path = write_config({"credsStore": "not-installed-xyz"})
    with pytest.raises(CredentialHelperNotFound) as info:
        resolve("ghcr.io")
    assert "docker-credential-not-installed-xyz" in info.value.message
    assert info.value.hint and "credsStore" in info.value.hint and str(path) in info.value.hint
    assert "install docker-credential-not-installed-xyz" in info.value.hint

    write_config({"credHelpers": {"ghcr.io": "not-installed-xyz"}})
    with pytest.raises(CredentialHelperError) as info2:
        resolve("ghcr.io")
    assert info2.value.hint and '"credHelpers" entry "ghcr.io"' in info2.value.hint


# --- helper protocol failures ------------------------------------------------------------------


def test_helper_with_garbage_output(bin_dir: Path) -> None:
    # Half a JSON document with the secret in it: the message must not quote it.
    _install(bin_dir, "garbage", f'#!/bin/sh\nprintf \'{{"Username": "u", "Secret": "{SECRET}\'\n')
    with pytest.raises(CredentialHelperError) as info:
        helper_get("garbage", "ghcr.io")
    assert "docker-credential-garbage" in info.value.message
    assert_no_secret(info.value)

    _install(bin_dir, "wrongtype", '#!/bin/sh\necho \'{"Username": "u", "Secret": 5}\'\n')
    with pytest.raises(CredentialHelperError, match="not a string"):
        helper_get("wrongtype", "ghcr.io")


def test_failing_helper_reports_its_error_without_secrets(bin_dir: Path) -> None:
    # Quotes what it was given (for store: the secret itself, bare) in its error, then fails.
    script = (
        f"#!{sys.executable}\nimport json, sys\ndata = sys.stdin.read()\n"
        "what = json.loads(data)['Secret'] if sys.argv[1] == 'store' else data\n"
        "print('keychain locked: ' + what, file=sys.stderr)\nsys.exit(3)\n"
    )
    _install(bin_dir, "failing", script)
    with pytest.raises(CredentialHelperError) as info:
        helper_store("failing", "ghcr.io", "alice", SECRET)
    message = info.value.message
    assert message == "docker-credential-failing store failed (exit 3): keychain locked: ***"
    assert_no_secret(info.value)

    with pytest.raises(CredentialHelperError) as info:
        helper_get("failing", "ghcr.io")
    assert "keychain locked: ghcr.io" in info.value.message


def test_failing_helper_that_prints_credentials_is_withheld(bin_dir: Path) -> None:
    script = f'#!/bin/sh\necho \'{{"Username": "u", "Secret": "{SECRET}"}}\'\nexit 2\n'
    _install(bin_dir, "leaky", script)
    with pytest.raises(CredentialHelperError) as info:
        helper_get("leaky", "ghcr.io")
    assert "withheld" in info.value.message
    assert_no_secret(info.value)


def test_slow_helper_times_out_and_is_killed(bin_dir: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleep.pid"
    # The sleep is a child of the shell: it must be killed too, or the pipes stay open.
    _install(bin_dir, "slow", f"#!/bin/sh\nsleep 20 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(CredentialHelperError, match=r"did not answer within 0\.3 s"):
        helper_get("slow", "ghcr.io", timeout=0.3)
    assert time.monotonic() - started < 5
    assert not _alive(int(pid_file.read_text()))


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True


def test_missing_helper_and_bad_names(bin_dir: Path) -> None:
    with pytest.raises(CredentialHelperNotFound, match="docker-credential-absent-xyz"):
        helper_get("absent-xyz", "ghcr.io")
    with pytest.raises(CredentialHelperNotFound, match="not a valid name"):
        helper_get("../../bin/sh", "ghcr.io")
    # Present but not executable counts as missing, as for any program on PATH.
    (bin_dir / "docker-credential-noexec").write_text("#!/bin/sh\n")
    with pytest.raises(CredentialHelperNotFound):
        helper_get("noexec", "ghcr.io")


def test_helper_erase_reports_whether_it_held_anything(bin_dir: Path) -> None:
    helper = FakeHelper(bin_dir, "eraser")
    helper.put("ghcr.io", "u", SECRET)
    assert helper_erase("eraser", "ghcr.io") is True
    assert helper_erase("eraser", "ghcr.io") is False
    assert helper_get("eraser", "ghcr.io") is None


# --- store (docker login) ----------------------------------------------------------------------


def test_store_keeps_other_keys_and_writes_0600(write_config: Callable[[object], Path]) -> None:
    original = {
        "auths": {"quay.io": {"auth": b64("q:qq"), "email": "q@example.com"}},
        "psFormat": "table {{.ID}}",
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "credHelpers": {"gcr.io": "gcloud"},
    }
    path = write_config(original)
    path.chmod(0o644)
    assert store("ghcr.io", "alice", SECRET) == path
    data = json.loads(path.read_text())
    assert data["auths"]["ghcr.io"] == {"auth": b64(f"alice:{SECRET}")}
    assert data["auths"]["quay.io"] == original["auths"]["quay.io"]  # type: ignore[index]
    assert {k: v for k, v in data.items() if k != "auths"} == {
        k: v for k, v in original.items() if k != "auths"
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temporary file left; the (empty) lock file of concurrent logins stays.
    assert sorted(p.name for p in path.parent.iterdir()) == [".config.json.lock", "config.json"]
    assert resolve("ghcr.io").password == SECRET


def test_store_creates_private_dir_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "new" / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(home))
    path = store("docker.io", "hubuser", SECRET)
    assert path == home / "config.json"
    assert stat.S_IMODE(home.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(json.loads(path.read_text())["auths"]) == [DOCKER_HUB_KEY]
    assert resolve("docker.io").username == "hubuser"


def test_store_through_symlink_updates_the_target(cfg_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "docker.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"auths": {}}))
    (cfg_dir / "config.json").symlink_to(target)
    store("ghcr.io", "alice", SECRET)
    assert (cfg_dir / "config.json").is_symlink()
    assert "ghcr.io" in json.loads(target.read_text())["auths"]


def test_store_through_creds_store(write_config: Callable[[object], Path], bin_dir: Path) -> None:
    helper = FakeHelper(bin_dir, "keychain")
    path = write_config(
        {"credsStore": "keychain", "auths": {DOCKER_HUB_KEY: {"auth": b64("old:plaintext")}}}
    )
    store("docker.io", "hubuser", SECRET)
    assert helper.held() == {DOCKER_HUB_KEY: {"Username": "hubuser", "Secret": SECRET}}
    text = path.read_text()
    assert SECRET not in text and "plaintext" not in text and b64("old:plaintext") not in text
    assert json.loads(text)["auths"] == {DOCKER_HUB_KEY: {}}
    assert resolve("docker.io").password == SECRET


def test_store_through_cred_helpers_entry(
    write_config: Callable[[object], Path], bin_dir: Path
) -> None:
    specific, general = FakeHelper(bin_dir, "specific"), FakeHelper(bin_dir, "general")
    write_config({"credsStore": "general", "credHelpers": {"ghcr.io": "specific"}})
    store("ghcr.io", "alice", SECRET)
    assert specific.held() == {"ghcr.io": {"Username": "alice", "Secret": SECRET}}
    assert general.held() == {}


def test_store_rejects_unusable_logins(cfg_dir: Path) -> None:
    for username, password in (("al:ice", "pw"), ("", "pw"), ("alice", "")):
        with pytest.raises(InvalidInput):
            store("ghcr.io", username, password)
    assert not (cfg_dir / "config.json").exists()


def test_store_with_failing_helper_does_not_touch_file(
    write_config: Callable[[object], Path], bin_dir: Path
) -> None:
    _install(bin_dir, "broken", "#!/bin/sh\necho 'backend unavailable'\nexit 1\n")
    path = write_config({"credsStore": "broken"})
    before = path.read_text()
    with pytest.raises(CredentialHelperError, match="backend unavailable") as info:
        store("ghcr.io", "alice", SECRET)
    assert_no_secret(info.value)
    assert path.read_text() == before


# --- erase (docker logout) ---------------------------------------------------------------------


def test_erase_removes_every_key_for_the_host(write_config: Callable[[object], Path]) -> None:
    path = write_config(
        {
            "auths": {
                "ghcr.io": {"auth": b64("u:p")},
                "https://ghcr.io": {"auth": b64("u:p")},
                "quay.io": {"auth": b64("q:q")},
            },
            "psFormat": "x",
        }
    )
    assert erase("ghcr.io") is True
    data = json.loads(path.read_text())
    assert data == {"auths": {"quay.io": {"auth": b64("q:q")}}, "psFormat": "x"}
    assert resolve("ghcr.io") is ANONYMOUS
    assert erase("ghcr.io") is False


def test_erase_without_file(cfg_dir: Path) -> None:
    assert erase("ghcr.io") is False
    assert not (cfg_dir / "config.json").exists()


def test_erase_through_helper(write_config: Callable[[object], Path], bin_dir: Path) -> None:
    helper = FakeHelper(bin_dir, "keychain")
    write_config({"credsStore": "keychain"})
    store("docker.io", "hubuser", SECRET)
    assert erase("index.docker.io") is True
    assert helper.held() == {}
    assert resolve("docker.io") is ANONYMOUS
    assert erase("docker.io") is False


# --- the value ---------------------------------------------------------------------------------


def test_repr_and_str_mask_secrets() -> None:
    creds = Credentials(
        username="alice",
        password=SECRET,
        identity_token=SECRET + "-id",
        registry_token=SECRET + "-reg",
        source="somewhere",
    )
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert SECRET not in text
    assert "alice" in repr(creds) and "***" in repr(creds)
    assert repr(ANONYMOUS).count("None") == 4
    assert str(ANONYMOUS) == "anonymous"
    assert ANONYMOUS.anonymous and Credentials(username="alice").anonymous
    assert str(Credentials("alice", SECRET, source="x")) == "user 'alice' from x"
