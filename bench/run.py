#!/usr/bin/env python3
"""skiff's push/build benchmark (issue 3, "Benchmark"); run by hand, not part of the test suite.

    .venv/bin/python bench/run.py --quick          # 200 MB of weights, 3 rounds, a few minutes
    .venv/bin/python bench/run.py                  # 2 GB of weights (the issue's figure)
    .venv/bin/python bench/run.py --size-mb 512 --rounds 5 --out bench/results/custom

Everything runs on 127.0.0.1: a Distribution registry per measured push (so each push starts
from an empty registry and nothing can be skipped or mounted), a token-auth registry for the
forbidden destination, and a tiny base image in its own registry. Each round measures every
figure once, alternating which of skiff and its reference goes first; the table quotes medians.
Every server started is stopped and the work folder (weights included) is removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SKIFF = ROOT / ".venv" / "bin" / "skiff"
EXAMPLE = ROOT / "examples" / "hello"
sys.path.insert(0, str(ROOT / "tests"))

from support import USERS, RegistryServer, TokenIssuer, push_tiny_image  # noqa: E402

MB = 1_000_000
MIB = 1 << 20
CHUNK = 16 * MIB  # weights are written in chunks: constant memory whatever the size
COMMAND_TIMEOUT = 1800.0  # seconds; a hung command ends the run instead of blocking it
WEIGHT_FILES = 2
# Model, warm cache, exported layout, a cold cache, a cold-push cache and two registries at once.
DISK_COPIES = 7
DISK_MARGIN = 2 * 1024 * MIB
LAYOUT_TAG = "bench"


# -- running and timing commands ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: int  # ru_maxrss of the process, from wait4 (what /usr/bin/time -v reports)

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.2f}s\n"
            f"{self.stdout[-2000:]}{self.stderr[-4000:]}"
        )


class BenchError(RuntimeError):
    pass


def run(argv: Sequence[str], env: dict[str, str], scratch: Path, *, expect: int = 0) -> Run:
    """Run ``argv`` and time it; stdout/stderr go to files so wait4 can give this child's rusage."""
    out_path, err_path = scratch / "stdout", scratch / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
        )
        watchdog = threading.Timer(COMMAND_TIMEOUT, os.kill, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    result = Run(
        tuple(argv),
        seconds,
        process.returncode,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
        int(usage.ru_maxrss),
    )
    if result.returncode != expect:
        raise BenchError(f"expected exit {expect}:\n{result.describe()}")
    return result


# -- fixtures: model folder, registries, environment ----------------------------------------------


def plan_size(requested: int, workdir: Path) -> tuple[int, str]:
    """The weights size to use, shrunk (with a note) if the disk cannot hold every copy."""
    free = shutil.disk_usage(workdir).free
    if requested * DISK_COPIES + DISK_MARGIN <= free:
        return requested, ""
    size = max(16 * MIB, (free - DISK_MARGIN) // DISK_COPIES)
    note = (
        f"only {free / MB:.0f} MB free on {workdir}: weights reduced from "
        f"{requested / MB:.0f} MB to {size / MB:.0f} MB"
    )
    return size, note


def registry_storage(choice: Path | None, weights: int, work: Path) -> tuple[Path | None, str]:
    """Where measured registries keep their blobs, and how the table names it.

    A remote registry writes to its own disk, not to the one holding the build cache. On one
    machine both would share a disk, and a cold push (the cache and the registry each writing
    the weights) would measure that disk, not the push. So, by default, the registries keep
    their storage in memory (/dev/shm) when it has room for two copies of the weights.
    """
    if choice is not None and str(choice) == "same":
        return None, "beside the build cache (same disk)"
    candidate = choice or Path("/dev/shm")
    try:
        free = shutil.disk_usage(candidate).free
    except OSError:
        free = 0
    if free < 2 * weights + DISK_MARGIN or not os.access(candidate, os.W_OK):
        if choice is not None:
            raise BenchError(f"{choice} cannot hold two copies of the weights")
        return None, "beside the build cache (same disk): /dev/shm has no room"
    parent = Path(tempfile.mkdtemp(prefix="skiff-bench-registries-", dir=candidate))
    if parent.stat().st_dev == work.stat().st_dev:
        return parent, f"{candidate} (the build cache's disk, as asked)"
    return parent, f"{candidate} (not the build cache's filesystem, as for a remote registry)"


def snapshot_source(dest: Path) -> str:
    """Extract src/ as committed at HEAD into ``dest``; returns the commit.

    The working tree may change while a run goes on: a snapshot keeps the code under test
    (and the runtime layer built from it) the same for the whole run.
    """
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    # Hashes can change if history is rewritten; the date and subject still find the commit.
    described = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h, %ci: %s", commit],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return described[:160]


def make_model(dest: Path, size: int) -> list[Path]:
    """examples/hello plus WEIGHT_FILES incompressible weights files totalling ``size`` bytes."""
    shutil.copytree(EXAMPLE, dest)
    per_file = size // WEIGHT_FILES
    files = []
    for index in range(WEIGHT_FILES):
        path = dest / "weights" / f"shard-{index + 1:05d}-of-{WEIGHT_FILES:05d}.safetensors"
        with path.open("wb") as out:
            left = per_file
            while left > 0:  # bounded: left shrinks by at least one byte per turn
                n = min(CHUNK, left)
                out.write(os.urandom(n))
                left -= n
        files.append(path)
    return files


@contextmanager
def registry(workdir: Path, **kwargs: Any) -> Iterator[RegistryServer]:
    """A registry whose storage is deleted when it stops."""
    server = RegistryServer(workdir, **kwargs)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Bench:
    work: Path
    model: Path
    base_image: str
    docker_config: Path
    forbidden_host: str
    layout: Path
    warm_cache: Path
    skopeo_default: bool = True
    digest: str = ""  # the manifest digest of the built image
    layout_ref: str = ""  # its name in the exported layout's index
    source: Path | None = None  # a snapshot of src/ to run instead of the working tree
    # Where measured registries keep their storage: a disk other than the build cache's, as a
    # remote registry's is (see registry_storage()); None: the scratch folder's disk.
    registry_parent: Path | None = None
    counter: int = 0
    notes: list[str] = field(default_factory=list)

    def scratch(self) -> Path:
        self.counter += 1
        path = self.work / "scratch" / str(self.counter)
        path.mkdir(parents=True)
        return path

    def env(self, cache: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
        if self.source is not None:
            # Ahead of the editable install's path: the snapshot's code is what runs.
            env["PYTHONPATH"] = str(self.source)
        env.update(
            SKIFF_CACHE_DIR=str(cache),
            SKIFF_BASE_IMAGE=self.base_image,
            DOCKER_CONFIG=str(self.docker_config),
            TMPDIR=str(self.work / "tmp"),
        )
        return env

    def skiff(self, args: Sequence[str], cache: Path, *, expect: int = 0) -> Run:
        return run([str(SKIFF), *args], self.env(cache), self.scratch(), expect=expect)

    def new_cache(self) -> Path:
        path = self.scratch() / "cache"
        path.mkdir()
        return path

    def fresh_registry(self, *, same_disk: bool = False) -> Any:
        """A registry with empty storage; ``same_disk`` puts it on the build cache's disk."""
        if same_disk or self.registry_parent is None:
            return registry(self.scratch() / "registry")
        self.counter += 1
        return registry(self.registry_parent / f"registry-{self.counter}")


def write_docker_config(path: Path, host: str, user: str, password: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def files_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def file_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def push_json(result: Run) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- one round: every figure once ---------------------------------------------------------------


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


def skopeo_copy(bench: Bench, host: str, repo: str, *, preserve: bool) -> Run:
    argv = [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        *(["--preserve-digests"] if preserve else []),
        f"oci:{bench.layout}:{bench.layout_ref}",
        f"docker://{host}/{repo}:1",
    ]
    env = dict(os.environ, TMPDIR=str(bench.work / "tmp"))
    return run(argv, env, bench.scratch())


def measure_fail_fast(bench: Bench, samples: Samples, index: int) -> None:
    cache = bench.new_cache()
    result = bench.skiff(
        ["push", f"{bench.forbidden_host}/bob/model:r{index}", "-C", str(bench.model)],
        cache,
        expect=3,
    )
    samples.add("fail_fast_s", result.seconds)
    samples.add("fail_fast_cache_blobs", file_count(cache / "oci" / "blobs"))


def measure_build(bench: Bench, samples: Samples, index: int) -> float:
    """Cold build vs hashing the same files (alternating order), then the warm rebuild.

    Two references: ``sha256sum`` (the issue's), and ``openssl dgst -sha256``, which uses the
    CPU's SHA instructions as Python's hashlib does (Debian's coreutils does not).
    """
    cache = bench.new_cache()
    files = files_in(bench.model)

    def cold() -> float:
        return bench.skiff(["build", "-C", str(bench.model)], cache).seconds

    def references() -> tuple[float, float]:
        sha = run(["sha256sum", *files], dict(os.environ), bench.scratch()).seconds
        ossl = run(["openssl", "dgst", "-sha256", *files], dict(os.environ), bench.scratch())
        return sha, ossl.seconds

    if index % 2 == 0:
        cold_s = cold()
        sha_s, openssl_s = references()
    else:
        sha_s, openssl_s = references()
        cold_s = cold()
    warm = bench.skiff(["build", "-C", str(bench.model)], cache)
    samples.add("cold_build_s", cold_s)
    samples.add("sha256sum_s", sha_s)
    samples.add("openssl_sha256_s", openssl_s)
    samples.add("warm_rebuild_s", warm.seconds)
    shutil.rmtree(cache)
    return cold_s


def measure_throughput(bench: Bench, samples: Samples, index: int, original_code: str) -> float:
    """Fresh push (warm cache, empty registry) vs skopeo; then re-pushes on skiff's registry.

    Returns skiff's fresh push time (the "upload alone" of the cold-push comparison).
    """
    with ExitStack() as stack:

        def skiff_push() -> float:
            reg = stack.enter_context(bench.fresh_registry())
            ref = f"{reg.host}/bench/warm-r{index}:1"
            result = bench.skiff(["push", ref, "-C", str(bench.model), "--json"], bench.warm_cache)
            report = push_json(result)
            samples.add("push_s", result.seconds)
            samples.add("push_rss_mb", result.max_rss_kib * 1024 / MB)
            samples.add("push_mb_s", report["bytes_uploaded"] / MB / result.seconds)
            samples.add("push_internal_s", report["elapsed_ms"] / 1000)
            measure_repush(bench, samples, ref, original_code)
            stack.close()  # this registry's storage goes before the next one fills up
            return result.seconds

        def skopeo(preserve: bool) -> float:
            with bench.fresh_registry() as reg:
                repo = f"bench/skopeo-r{index}"
                result = skopeo_copy(bench, reg.host, repo, preserve=preserve)
                key = "skopeo" if preserve else "skopeo_default"
                samples.add(f"{key}_s", result.seconds)
                samples.add(f"{key}_rss_mb", result.max_rss_kib * 1024 / MB)
                samples.add(f"{key}_same_digest", float(reg.manifests(repo) == [bench.digest]))
                return result.seconds

        if index % 2 == 0:
            push_s = skiff_push()
            skopeo(preserve=True)
        else:
            skopeo(preserve=True)
            push_s = skiff_push()
        if bench.skopeo_default:
            skopeo(preserve=False)
    return push_s


def measure_repush(bench: Bench, samples: Samples, ref: str, original_code: str) -> None:
    """A one-line code change, then the same push again with nothing changed."""
    code = bench.model / "predict.py"
    code.write_text(original_code + f"# bench edit at {time.time_ns()}\n")
    try:
        changed = push_json(
            bench.skiff(["push", ref, "-C", str(bench.model), "--json"], bench.warm_cache)
        )
        samples.add("repush_bytes", changed["bytes_uploaded"])
        layers = [la for la in changed["layers"] if la["role"] != "config"]
        samples.add("repush_layer_bytes", sum(la["bytes_uploaded"] for la in layers))
        roles = sorted(la["role"] for la in layers if la["status"] == "uploaded")
        if roles != ["code"]:
            bench.notes.append(f"re-push after a code change uploaded the layers {roles}")
        noop = bench.skiff(["push", ref, "-C", str(bench.model), "--json"], bench.warm_cache)
        report = push_json(noop)
        samples.add("noop_s", noop.seconds)
        uploaded = sum(la["status"] == "uploaded" for la in report["layers"])
        samples.add("noop_blobs_uploaded", uploaded)
        samples.add("noop_bytes", report["bytes_uploaded"])
        samples.add("noop_internal_s", report["elapsed_ms"] / 1000)
    finally:
        code.write_text(original_code)


def measure_cold_push(bench: Bench, samples: Samples, index: int) -> None:
    cache = bench.new_cache()
    with bench.fresh_registry() as reg:
        result = bench.skiff(
            ["push", f"{reg.host}/bench/cold-r{index}:1", "-C", str(bench.model), "--json"], cache
        )
    samples.add("cold_push_s", result.seconds)
    shutil.rmtree(cache)
    if bench.registry_parent is not None:
        measure_same_disk(bench, samples, index)


def measure_same_disk(bench: Bench, samples: Samples, index: int) -> None:
    """(Information) the fresh push and the cold push again, into a registry whose storage is
    on the build cache's disk: both then write the weights to one disk."""
    with bench.fresh_registry(same_disk=True) as reg:
        ref = f"{reg.host}/bench/warm-disk-r{index}:1"
        warm = bench.skiff(["push", ref, "-C", str(bench.model), "--json"], bench.warm_cache)
    samples.add("push_same_disk_s", warm.seconds)
    cache = bench.new_cache()
    with bench.fresh_registry(same_disk=True) as reg:
        ref = f"{reg.host}/bench/cold-disk-r{index}:1"
        cold = bench.skiff(["push", ref, "-C", str(bench.model), "--json"], cache)
    samples.add("cold_push_same_disk_s", cold.seconds)
    shutil.rmtree(cache)


# -- the table -----------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return "pass" if ok else "**FAIL**"


def paired(samples: Samples, mine: str, reference: Sequence[float] | str) -> str:
    """Per-round ratios (each sample against the reference of the same round)."""
    refs = samples.values[reference] if isinstance(reference, str) else reference
    ratios = sorted(a / b for a, b in zip(samples.values[mine], refs, strict=True))
    if len(ratios) < 2:
        return ""
    return (
        f"; per round: median {statistics.median(ratios):.2f}, "
        f"range {ratios[0]:.2f} to {ratios[-1]:.2f}"
    )


def table(samples: Samples) -> tuple[str, dict[str, bool]]:
    m = samples.median
    rows: list[tuple[str, str, str, str, str, bool | None]] = []

    fail_fast, build = m("fail_fast_s"), m("cold_build_s")
    speedup = build / fail_fast
    rows.append(
        (
            "fail fast: `skiff push` to a forbidden destination (exit 3)",
            f"{fail_fast:.2f} s",
            f"{build:.2f} s (`skiff build`, cold)",
            f"build / fail-fast = {speedup:.1f}x" + paired(samples, "cold_build_s", "fail_fast_s"),
            "< 1 s and >= 50x",
            fail_fast < 1.0 and speedup >= 50,
        )
    )
    push_s, skopeo_s = m("push_s"), m("skopeo_s")
    rows.append(
        (
            "throughput: fresh push, warm cache, empty registry",
            f"{push_s:.2f} s ({m('push_mb_s'):.0f} MB/s)",
            f"{skopeo_s:.2f} s (`skopeo copy --preserve-digests`)",
            f"skiff / skopeo = {push_s / skopeo_s:.2f}" + paired(samples, "push_s", "skopeo_s"),
            "<= 1.0",
            push_s <= skopeo_s,
        )
    )
    if "skopeo_default_s" in samples.values:
        default_s = m("skopeo_default_s")
        rows.append(
            (
                "(information) same, vs plain `skopeo copy` (it gzips the uncompressed layers)",
                f"{push_s:.2f} s",
                f"{default_s:.2f} s",
                f"skiff / skopeo = {push_s / default_s:.2f}",
                "-",
                None,  # information, no target
            )
        )
    rss = max(samples.values["push_rss_mb"])
    rows.append(
        (
            "peak memory (max RSS) of `skiff push` (largest sample)",
            f"{rss:.0f} MB",
            f"{max(samples.values['skopeo_rss_mb']):.0f} MB (skopeo)",
            "-",
            "< 200 MB",
            rss < 200,
        )
    )
    repush = max(samples.values["repush_bytes"])
    repush_layers = max(samples.values["repush_layer_bytes"])
    rows.append(
        (
            "re-push after a one-line code change: bytes uploaded (largest sample)",
            f"{repush_layers / 1000:.1f} kB of layers ({repush / 1000:.1f} kB with the config)",
            "-",
            "-",
            "< 1 MB of layer data",
            repush_layers < MB,
        )
    )
    noop, noop_blobs = m("noop_s"), max(samples.values["noop_blobs_uploaded"])
    rows.append(
        (
            "no-op re-push: wall time; blobs uploaded (most in any sample)",
            f"{noop:.2f} s; {noop_blobs:.0f} blobs",
            f"{m('noop_internal_s'):.2f} s (skiff's own elapsed_ms, without interpreter start-up)",
            "-",
            "< 1 s, 0 blobs",
            noop < 1.0 and noop_blobs == 0,
        )
    )
    sha = m("sha256sum_s")
    rows.append(
        (
            "cold build (empty SKIFF_CACHE_DIR) vs `sha256sum` of the same files",
            f"{build:.2f} s",
            f"{sha:.2f} s",
            f"{build / sha:.2f}" + paired(samples, "cold_build_s", "sha256sum_s"),
            "<= 2.0",
            build <= 2 * sha,
        )
    )
    openssl = m("openssl_sha256_s")
    rows.append(
        (
            "(information) cold build vs `openssl dgst -sha256` of the same files",
            f"{build:.2f} s",
            f"{openssl:.2f} s",
            f"{build / openssl:.2f}" + paired(samples, "cold_build_s", "openssl_sha256_s"),
            "-",
            None,  # information, no target
        )
    )
    warm = m("warm_rebuild_s")
    rows.append(
        (
            "warm rebuild, nothing changed",
            f"{warm:.2f} s",
            "-",
            "-",
            "< 1 s",
            warm < 1.0,
        )
    )
    cold_push = m("cold_push_s")
    longer = max(build, push_s)
    build_s, push_samples = samples.values["cold_build_s"], samples.values["push_s"]
    rows.append(
        (
            "cold push (empty cache, empty registry) vs the longer of cold build and fresh push",
            f"{cold_push:.2f} s",
            f"{longer:.2f} s",
            f"{cold_push / longer:.2f}"
            + paired(
                samples,
                "cold_push_s",
                [max(b, p) for b, p in zip(build_s, push_samples, strict=True)],
            ),
            "<= 1.3",
            cold_push <= 1.3 * longer,
        )
    )
    if "cold_push_same_disk_s" in samples.values:
        same_disk, push_disk = m("cold_push_same_disk_s"), m("push_same_disk_s")
        longer_disk = max(build, push_disk)
        rows.append(
            (
                "(information) cold push with the registry's storage on the build cache's disk, "
                "vs the longer of cold build and fresh push to such a registry",
                f"{same_disk:.2f} s",
                f"{longer_disk:.2f} s (push {push_disk:.2f} s)",
                f"{same_disk / longer_disk:.2f}"
                + paired(
                    samples,
                    "cold_push_same_disk_s",
                    [
                        max(b, p)
                        for b, p in zip(build_s, samples.values["push_same_disk_s"], strict=True)
                    ],
                ),
                "-",
                None,  # information, no target
            )
        )
    lines = [
        "| measurement | skiff (median) | reference (median) | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    passed: dict[str, bool] = {}
    for name, mine, ref, ratio, target, ok in rows:
        lines.append(f"| {name} | {mine} | {ref} | {ratio} | {target} | {verdict(ok)} |")
        if ok is not None:
            passed[name] = ok
    return "\n".join(lines), passed


def samples_table(samples: Samples) -> str:
    lines = ["| sample | values (one per round, in order) | median |", "|---|---|---|"]
    for name, values in samples.values.items():
        shown = ", ".join(f"{v:.3g}" for v in values)
        lines.append(f"| `{name}` | {shown} | {statistics.median(values):.3g} |")
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": out(["nproc"]),
        "memory": out(["sh", "-c", "free -m | awk '/Mem:/ {print $2 \" MB\"}'"]),
        "load average (start)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "skopeo": out(["skopeo", "--version"]),
    }


# -- main ----------------------------------------------------------------------------------------


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=2000, help="weights, in MB (default 2000)")
    parser.add_argument("--quick", action="store_true", help="200 MB of weights")
    parser.add_argument("--rounds", type=int, default=3, help="samples of each figure (default 3)")
    parser.add_argument(
        "--no-skopeo-default",
        action="store_true",
        help="skip the informational plain `skopeo copy` (which recompresses)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the working tree's src/ instead of a snapshot of HEAD's",
    )
    parser.add_argument("--out", type=Path, help="write PREFIX.md and PREFIX.json")
    parser.add_argument(
        "--workdir", type=Path, help="parent of the scratch folder (default TMPDIR)"
    )
    parser.add_argument(
        "--registry-dir",
        type=Path,
        help="parent of the measured registries' storage (default /dev/shm when it has room; "
        "'same' keeps it beside the build cache)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be between 1 and 50")
    requested = 200 * MB if args.quick else args.size_mb * MB
    # A plain `kill` unwinds like Ctrl-C, so registries stop and the scratch folder goes.
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-", dir=args.workdir))
    try:
        return bench_in(work, requested, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the weights, caches and registries go too


def bench_in(work: Path, requested: int, args: argparse.Namespace) -> int:
    info = machine_info()
    size, note = plan_size(requested, work)
    (work / "tmp").mkdir()
    print(f"work folder {work}; weights {size / MB:.0f} MB in {WEIGHT_FILES} files")
    model = work / "model"
    started = time.perf_counter()
    make_model(model, size)
    print(f"weights written in {time.perf_counter() - started:.1f}s")
    original_code = (model / "predict.py").read_text()
    source: Path | None = None
    if args.live:
        info["skiff code"] = f"working tree {ROOT / 'src'} (may change during the run)"
    else:
        commit = snapshot_source(work / "snapshot")
        source = work / "snapshot" / "src"
        info["skiff code"] = f"commit {commit} (a snapshot of src/ taken at the start)"
    samples = Samples()
    registry_parent, info["registry storage"] = registry_storage(args.registry_dir, size, work)
    with ExitStack() as stack:
        if registry_parent is not None:
            stack.callback(shutil.rmtree, registry_parent, True)
        base_reg = stack.enter_context(registry(work / "base-registry"))
        push_tiny_image(base_reg, "base/tiny", "1")
        issuer = stack.enter_context(TokenIssuer(work / "issuer", users=USERS))
        forbidden = stack.enter_context(registry(work / "token-registry", token=issuer))
        docker_config = work / "docker-config"
        write_docker_config(docker_config, forbidden.host, "alice", USERS["alice"])
        bench = Bench(
            work=work,
            model=model,
            base_image=f"{base_reg.host}/base/tiny:1",
            docker_config=docker_config,
            forbidden_host=forbidden.host,
            layout=work / "layout",
            warm_cache=work / "warm-cache",
            skopeo_default=not args.no_skopeo_default,
            source=source,
            registry_parent=registry_parent,
        )
        if source is not None:
            probe = [
                str(ROOT / ".venv" / "bin" / "python"),
                "-c",
                "import skiff; print(skiff.__file__)",
            ]
            where = run(probe, bench.env(work), bench.scratch()).stdout.strip()
            if not where.startswith(str(source)):
                raise BenchError(f"skiff is imported from {where}, not from the snapshot {source}")
        # The warm cache and the layout skopeo pushes: the same image, built once.
        built = bench.skiff(
            [
                "build",
                "-C",
                str(model),
                "-t",
                f"bench:{LAYOUT_TAG}",
                "--output-layout",
                str(bench.layout),
            ],
            bench.warm_cache,
        )
        index = json.loads((bench.layout / "index.json").read_text())
        bench.digest = index["manifests"][0]["digest"]
        annotations = index["manifests"][0].get("annotations", {})
        bench.layout_ref = annotations.get("org.opencontainers.image.ref.name", "")
        if not bench.layout_ref.endswith(f":{LAYOUT_TAG}"):
            raise BenchError(f"unexpected layout index {index}:\n{built.describe()}")
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}")
            measure_fail_fast(bench, samples, round_index)
            measure_build(bench, samples, round_index)
            measure_throughput(bench, samples, round_index, original_code)
            measure_cold_push(bench, samples, round_index)
            shutil.rmtree(work / "scratch", ignore_errors=True)
            print("  " + ", ".join(f"{k}={v[-1]:.3g}" for k, v in samples.values.items()))
    if any(samples.values["fail_fast_cache_blobs"]):
        bench.notes.append("the rejected push wrote blobs into its cache (it should write none)")
    if not all(samples.values["skopeo_same_digest"]):
        bench.notes.append("skopeo --preserve-digests pushed a different manifest digest")
    summary, passed = table(samples)
    info["weights"] = f"{size / MB:.0f} MB in {WEIGHT_FILES} files of random bytes"
    info["rounds"] = str(args.rounds)
    info["load average (end)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = "\n".join(f"- {k}: {v}" for k, v in info.items())
    notes = "\n".join(f"- note: {n}" for n in ([note] if note else []) + bench.notes)
    markdown = f"{header}\n{notes}\n\n{summary}\n\nSamples:\n\n{samples_table(samples)}\n"
    print("\n" + markdown)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(markdown)
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "machine": info,
                    "notes": [note, *bench.notes],
                    "samples": samples.values,
                    "passed": passed,
                },
                indent=2,
            )
        )
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
