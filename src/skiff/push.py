"""``skiff push`` as a pipeline: preflight first, then the build with each layer uploaded as soon
as it is built (a large one while it is built, on a first push), the manifest last — only after
every blob is in the registry.

Preflight runs before anything is imported for the build or written to the cache, so a rejected
destination costs a fraction of a second and leaves no trace. A failure after the build leaves
the build in the cache: the next push reuses it and uploads only what the registry still lacks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from skiff import known
from skiff import reference as refs
from skiff.auth import dockerconfig
from skiff.digest import CorruptBlob, Digest
from skiff.errors import BuildFailed, DestinationRejected, InvalidInput, SkiffError, UploadFailed
from skiff.image.options import BuildOptions
from skiff.preflight import CheckResult, Intent, Report, Severity, run_preflight
from skiff.registry.client import RegistryClient
from skiff.registry.errors import RegistryError
from skiff.registry.transport import TransportOptions
from skiff.registry.upload import (
    MONOLITHIC_MAX,
    BlobResult,
    BlobSource,
    Cancellation,
    Outcome,
    UploadCancelled,
    push_blob,
    retryable,
    stream_growing,
    streams_whole_blobs,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from skiff.image.base import BaseImage
    from skiff.image.builder import BuiltImage, BuiltLayer
    from skiff.image.layout import GrowingBlob, Layout

MANIFEST_ATTEMPTS = 4
# What a registry answers to a manifest whose blobs it does not see (yet).
_BLOB_NOT_SEEN = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})
CACHED_HINT = "the build is cached: run the same push again and only what is missing is uploaded"
REFUSED_HINT = (
    "the registry refused it for good: fix what it says (a proxy's body size limit, a storage "
    "quota, permissions), then push again; the build is cached"
)
# Builds a push runs when cached blobs prove corrupt: the first, and one with them rebuilt.
BUILD_ROUNDS = 2
CACHE_CHANGED_HINT = (
    "the build cache changed during the push (was it cleaned?): run the same push again; the "
    "build writes what is missing"
)


class PushEvents(Protocol):
    """What a push tells its user while it runs (the CLI draws progress from these)."""

    def check(self, result: CheckResult) -> None: ...
    def status(self, text: str) -> None: ...
    # A blob is known by ``key``: its digest, or, for a layer streamed while it is built, the
    # object that follows it (its digest and ``size`` are known only at the end: size None).
    # A result of None: that attempt was given up, and the blob is announced again.
    def blob_started(self, key: object, size: int | None, role: str) -> None: ...
    def blob_progress(self, key: object, done: int) -> None: ...
    def blob_finished(self, key: object, result: BlobResult | None, role: str) -> None: ...


class QuietEvents:
    def check(self, result: CheckResult) -> None: ...
    def status(self, text: str) -> None: ...
    def blob_started(self, key: object, size: int | None, role: str) -> None: ...
    def blob_progress(self, key: object, done: int) -> None: ...
    def blob_finished(self, key: object, result: BlobResult | None, role: str) -> None: ...


class PreflightRejected(DestinationRejected):
    """Preflight said no; ``report`` has every check."""

    def __init__(self, report: Report) -> None:
        failure = report.failure
        assert failure is not None
        super().__init__(failure.message, failure.hint)
        self.report = report


class _CorruptCache(Exception):
    """Cached blobs did not match their digests; they are gone from the cache, to be rebuilt."""

    def __init__(self, digests: list[Digest]) -> None:
        super().__init__(", ".join(map(str, digests)))
        self.digests = digests


class PreflightInvalid(InvalidInput):
    def __init__(self, report: Report) -> None:
        failure = report.failure
        assert failure is not None
        super().__init__(failure.message, failure.hint)
        self.report = report


@dataclass(frozen=True)
class PushOptions:
    build: BuildOptions = field(default_factory=BuildOptions)
    parallel: int = 3  # blobs in flight at once, as peers do
    chunk_size: int | None = None
    new_repository: bool = False  # --new: a repository that does not exist yet is meant
    # Repositories of the destination's registry that hold this image already (an earlier
    # destination of the same push): every blob is mounted from there rather than uploaded.
    mount_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerReport:
    digest: Digest
    size: int
    role: str
    outcome: Outcome
    bytes_sent: int

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.digest),
            "size": self.size,
            "role": self.role,
            "status": str(self.outcome),
            "bytes_uploaded": self.bytes_sent,
        }


@dataclass
class PushResult:
    reference: refs.Reference
    digest: Digest
    layers: list[LayerReport]
    preflight: Report
    warnings: list[str]
    elapsed_s: float

    @property
    def bytes_uploaded(self) -> int:
        return sum(layer.bytes_sent for layer in self.layers)

    @property
    def pinned(self) -> str:
        return f"{self.reference.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "reference": str(self.reference),
            "digest": str(self.digest),
            "pinned": self.pinned,
            "bytes_uploaded": self.bytes_uploaded,
            "elapsed_ms": round(self.elapsed_s * 1000, 1),
            "layers": [layer.to_json() for layer in self.layers],
            "checks": [r.to_json() for r in self.preflight.results],
            "warnings": self.warnings,
        }


def push(
    folder: Path,
    text: str,
    options: PushOptions | None = None,
    *,
    events: PushEvents | None = None,
    layout: Layout | None = None,
) -> PushResult:
    """Check, build and upload the model in ``folder`` to ``text``.

    Ctrl-C (KeyboardInterrupt) stops the uploads between requests and cancels the upload
    sessions they hold before it propagates.
    """
    options = options or PushOptions()
    events = events or QuietEvents()
    started = time.perf_counter()
    # Preflight first, alone: the builder's imports (cog.yaml's schema, the image code) would
    # hold the interpreter while preflight waits for the registry, delaying a rejection, and
    # the build work they could overlap is a small part of any build.
    report = run_preflight(
        text,
        model_dir=folder,
        on_result=events.check,
        intent=Intent(str(options.build.platform), options.new_repository),
    )
    _raise_if_failed(report)
    assert report.reference is not None
    ref = refs.parse(report.reference)
    if ref.digest is not None:
        raise InvalidInput(
            f"cannot push to a digest ({ref}): a digest names an image that already exists",
            f"push to a tag instead, e.g. {ref.repository}:latest",
        )
    from skiff.image.builder import Builder
    from skiff.image.layout import default_layout

    cache = layout or default_layout()
    uploader = _Uploader(ref, options, events)

    def on_layer(layer: BuiltLayer) -> None:
        uploader.raise_if_refused()  # nothing can make this push succeed: stop building
        if layer.role == "base" and builder.base is not None:
            uploader.mount_base(builder.base)
        uploader.submit(layer, cache)

    try:
        for round_ in range(1, BUILD_ROUNDS + 1):
            builder = Builder(
                folder,
                options.build,
                layout=cache,
                on_layer=on_layer,
                on_status=events.status,
                on_layer_started=uploader.follow,
                check_stop=uploader.raise_if_refused,
            )
            image = builder.build()
            try:
                return uploader.finish(
                    image, cache, report, started, may_rebuild=round_ < BUILD_ROUNDS
                )
            except _CorruptCache as exc:
                # Evicted: the build writes them again (a base layer is pulled again), and
                # what is already in the registry is not sent twice.
                events.status(f"corrupted in the cache, rebuilding: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover
    except BaseException:
        uploader.abandon()
        raise
    finally:
        uploader.close()


def _raise_if_failed(report: Report) -> None:
    failure = report.failure
    if failure is None:
        return
    if failure.severity is Severity.INPUT:
        raise PreflightInvalid(report)
    raise PreflightRejected(report)


class _Uploader:
    """Uploads blobs in parallel as the builder announces them; the manifest goes last.

    Into a repository without tags (a first push), large layers are streamed while they are
    built: nothing there can be skipped, so waiting for a layer's digest would only delay its
    upload. Elsewhere a layer waits for its digest, so that what the registry has is skipped.
    """

    def __init__(self, ref: refs.Reference, options: PushOptions, events: PushEvents) -> None:
        self.ref = ref
        self.options = options
        self.events = events
        try:
            credentials = dockerconfig.resolve(ref.repository.registry)
        except SkiffError as exc:
            raise DestinationRejected(exc.message, exc.hint) from None
        self.client = RegistryClient(
            ref.repository,
            credentials,
            # No deadline on the whole upload (it may rightly take hours): on the time without
            # progress instead (SKIFF_DEADLINE), enforced by the upload logic.
            options=TransportOptions.from_env(read_timeout=30.0, deadline=None, phase="upload"),
        )
        from concurrent.futures import ThreadPoolExecutor  # not needed by a rejected push

        self.pool = ThreadPoolExecutor(
            max_workers=max(1, options.parallel), thread_name_prefix="skiff-upload"
        )
        self.futures: dict[Digest, tuple[Future[BlobResult], str]] = {}
        self.lock = threading.Lock()
        self.asking = threading.Lock()
        self.mount_from: tuple[str, ...] = ()
        self.cancellation = Cancellation(self.client.options.stall_deadline)
        self.refused: RegistryError | None = None  # a blob refused for good, once one is
        # Its own lock: a future already done runs its callback at once, under self.lock.
        self.refusing = threading.Lock()
        self.growing: dict[GrowingBlob, Future[BlobResult | None]] = {}
        self.corrupted: list[Digest] = []  # cached blobs found corrupt, for the warnings
        # Whether large layers are streamed as they are built: None until the first one asks
        # (a push whose layers are all cached never pays for the question).
        self.stream_early: bool | None = None
        if not streams_whole_blobs(self.client, options.chunk_size):
            self.stream_early = False

    def close(self) -> None:
        # After abandon() the workers stop at their next write: nothing to wait for.
        self.pool.shutdown(wait=not self.cancellation.cancelled, cancel_futures=True)
        self.client.close()

    def abandon(self) -> None:
        """Stop at once: no new request, open upload sessions cancelled (bounded in time)."""
        self.cancellation.cancel(timeout=0.8)
        self.pool.shutdown(wait=False, cancel_futures=True)
        # Idle connections close now. A worker blocked in a send (a hung link) stays blocked
        # until its timeout whatever is closed here: the CLI does not wait for it (cli._leave).
        self.client.close()

    def mount_base(self, base: BaseImage) -> None:
        """Base layers already in the destination registry are mounted, not uploaded."""
        if base.reference.repository.registry == self.ref.repository.registry:
            self.mount_from = (base.reference.repository.path,)

    def submit(self, layer: BuiltLayer, layout: Layout) -> None:
        self._submit(layer.descriptor.digest, layer.descriptor.size, layer.role, layout)

    def follow(self, growing: GrowingBlob, role: str) -> None:
        """A large layer has started being written: stream it if that can only help."""
        with self.lock:
            if self.stream_early is not False:
                self.growing[growing] = self.pool.submit(self._stream, growing, role)

    def _submit(self, digest: Digest, size: int, role: str, layout: Layout) -> None:
        with self.lock:
            if digest in self.futures:
                return
            blob = BlobSource(digest, size, _opener(layout, digest))
            streamed = next((f for g, f in self.growing.items() if g.digest == digest), None)
            if streamed is not None:
                # Queued after the stream's own task, so that one is running or done by now.
                future = self.pool.submit(self._after_stream, streamed, blob, role)
            else:
                future = self.pool.submit(self._upload, blob, role)
            future.add_done_callback(self._note_refusal)
            self.futures[digest] = (future, role)

    def _stream(self, growing: GrowingBlob, role: str) -> BlobResult | None:
        """Stream a layer being built once it proves large; None leaves it to the usual way."""
        while True:
            self.cancellation.check()
            written = growing.wait(MONOLITHIC_MAX, 0.5)
            if growing.failed or growing.digest is not None:
                return None  # small (a PUT once built is cheaper), or never finished
            if written > MONOLITHIC_MAX:
                break
        if not self._may_stream():
            return None
        self.events.blob_started(growing, None, role)
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            self.events.blob_progress(growing, done[0])

        result = stream_growing(
            self.client, growing, on_progress=progress, cancellation=self.cancellation
        )
        self.events.blob_finished(growing, result, role)
        if result is None:
            with self.lock:
                self.stream_early = False  # this registry may refuse it again: stop trying
        return result

    def _may_stream(self) -> bool:
        """Only into a repository known to be empty: elsewhere what the registry has must be
        skipped, which needs the digest first."""
        with self.asking:  # its own lock: the builder's announcements need not wait for it
            if self.stream_early is None:
                answer = False
                with contextlib.suppress(RegistryError):
                    answer = not self.client.has_tags()
                self.stream_early = answer
            return self.stream_early

    def _after_stream(
        self, streamed: Future[BlobResult | None], blob: BlobSource, role: str
    ) -> BlobResult:
        result = streamed.result()
        if result is not None and result.digest == blob.digest:
            return result
        return self._upload(blob, role)

    def _upload(self, blob: BlobSource, role: str) -> BlobResult:
        self.events.blob_started(blob.digest, blob.size, role)
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            self.events.blob_progress(blob.digest, done[0])

        mount = (self.mount_from if role == "base" else ()) + self.options.mount_from
        result = push_blob(
            self.client,
            blob,
            mount_from=mount,
            chunk_size=self.options.chunk_size,
            on_progress=progress,
            cancellation=self.cancellation,
        )
        self.events.blob_finished(blob.digest, result, role)
        return result

    def finish(
        self,
        image: BuiltImage,
        layout: Layout,
        report: Report,
        started: float,
        *,
        may_rebuild: bool = False,
    ) -> PushResult:
        """Waits for every blob, then puts the manifest. Cached blobs found corrupt are removed
        from the cache and, with ``may_rebuild``, raised as ``_CorruptCache`` for the caller
        to build again; else they fail the push."""
        self.mount_base(image.base)
        for layer in image.layers:
            self.submit(layer, layout)
        self._submit(image.config_descriptor.digest, image.config_descriptor.size, "config", layout)
        if self._wait_unless_refused():
            # The other uploads were cancelled mid-way: what they end with says nothing more.
            self.raise_if_refused()
        results: list[LayerReport] = []
        errors: list[str] = []
        corrupt: list[Digest] = []
        hint = CACHED_HINT
        # This image's blobs: after a rebuild, some uploaded for the first build may be gone.
        wanted = {layer.descriptor.digest for layer in image.layers}
        wanted.add(image.config_descriptor.digest)
        for digest, (future, role) in list(self.futures.items()):
            if digest not in wanted:
                continue
            try:
                blob = future.result()
            except CorruptBlob as exc:
                # Never pushed; removed so that the build makes it again, and forgotten here
                # so that the rebuilt blob is uploaded.
                layout.path(exc.digest).unlink(missing_ok=True)
                del self.futures[digest]
                corrupt.append(exc.digest)
                self.corrupted.append(exc.digest)
                continue
            except SkiffError as exc:
                errors.append(exc.message)
                continue
            except OSError as exc:  # the cached blob went away or became unreadable
                errors.append(f"cannot read {digest} from the cache: {exc.strerror or exc}")
                hint = CACHE_CHANGED_HINT
                continue
            results.append(LayerReport(digest, blob.size, role, blob.outcome, blob.bytes_sent))
        manifest_bytes = layout.read_bytes(image.manifest_descriptor.digest)
        if Digest.of(manifest_bytes) != image.manifest_descriptor.digest:
            layout.path(image.manifest_descriptor.digest).unlink(missing_ok=True)
            corrupt.append(image.manifest_descriptor.digest)
            self.corrupted.append(image.manifest_descriptor.digest)
        if corrupt and not errors:
            if may_rebuild:
                raise _CorruptCache(corrupt)
            raise BuildFailed(
                f"the build cache gives back other bytes than were written to it, even after "
                f"a rebuild ({corrupt[0]})",
                "check the disk; removing the cache folder (SKIFF_CACHE_DIR, default "
                "~/.cache/skiff) costs only a rebuild",
            )
        if corrupt:
            errors.append(CorruptBlob(corrupt[0]).message)
        if errors:
            raise UploadFailed(
                f"upload to {self.ref.repository} failed: {errors[0]}"
                + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                hint,
            )
        self.events.status("writing the manifest")
        try:
            digest = self._put_manifest(manifest_bytes, image.manifest.media_type)
        except RegistryError as exc:
            raise UploadFailed(
                f"the registry refused the manifest of {self.ref}: {exc.message}",
                exc.hint or CACHED_HINT,
            ) from None
        order = {layer.descriptor.digest: i for i, layer in enumerate(image.layers)}
        results.sort(key=lambda r: order.get(r.digest, len(order)))
        known.record(self.ref, digest)  # where it went, for the typo check of later pushes
        warnings = image.warnings + [
            f"cached blob {bad} did not match its digest (a disk fault?): it was rebuilt"
            for bad in self.corrupted
        ]
        return PushResult(
            self.ref, digest, results, report, warnings, time.perf_counter() - started
        )

    def _wait_unless_refused(self) -> bool:
        """Waits for every upload, unless the registry refuses one for good (a proxy's 413, a
        storage quota): nothing can make this push succeed then, so the others are cancelled at
        once rather than run to their end. True if that happened."""
        from concurrent.futures import FIRST_EXCEPTION, wait

        pending = {future for future, _ in self.futures.values()}
        while pending and self.refused is None:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:  # a future's callbacks may run after wait() has returned
                self._note_refusal(future)
        if self.refused is None:
            return False
        self.abandon()
        return True

    def _note_refusal(self, future: Future[BlobResult]) -> None:
        """Remembers the first refusal for good, for the build and ``finish`` to stop at."""
        if future.cancelled():
            return
        exc = future.exception()
        # A cancelled upload is this push stopping, not the registry's answer.
        if (
            isinstance(exc, RegistryError)
            and not isinstance(exc, UploadCancelled)
            and (not retryable(exc))
        ):
            with self.refusing:
                self.refused = self.refused or exc

    def raise_if_refused(self) -> None:
        refused = self.refused
        if refused is not None:
            raise UploadFailed(
                f"upload to {self.ref.repository} failed: {refused.message}", REFUSED_HINT
            )

    def _put_manifest(self, body: bytes, media_type: str) -> Digest:
        """PUT the manifest; a registry that does not see a blob it has just accepted is asked
        again. (Distribution does this while concurrent pushes commit the same blob: it answers
        DIGEST_INVALID and MANIFEST_BLOB_UNKNOWN, and accepts the same manifest a moment later;
        its filesystem driver rewrites a repository's link to a blob in place.)"""
        for attempt in range(1, MANIFEST_ATTEMPTS + 1):
            try:
                return self.client.put_manifest(self.ref.identifier, body, media_type)
            except RegistryError as exc:
                if attempt == MANIFEST_ATTEMPTS or exc.code not in _BLOB_NOT_SEEN:
                    raise
                self.cancellation.wait(0.1 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def _opener(layout: Layout, digest: Digest) -> Callable[[], Any]:
    path = layout.path(digest)
    return lambda: path.open("rb")
