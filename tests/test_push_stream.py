"""A first push streams large layers while they are built; other pushes wait for digests.

Into a repository without tags nothing can be skipped, so a weights layer goes up in one PATCH
of unknown length that follows the blob as the builder writes it, and the digest comes with the
closing PUT. A repository with tags may already hold the layers: there a layer is hashed first,
so that what the registry has is skipped. A stream that fails in any way is given up and the
built layer goes up the usual way. All against a real registry, through a fault proxy that logs
each request (a PATCH without a declared length is a streamed one).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import test_push_faults as faults
from skiff.auth.credentials import ANONYMOUS
from skiff.digest import Digest
from skiff.image.layout import GrowingBlob, Layout
from skiff.push import PushOptions, push
from skiff.reference import parse
from skiff.registry.client import RegistryClient
from skiff.registry.transport import TransportOptions
from skiff.registry.upload import Cancellation, Outcome, UploadCancelled, stream_growing
from support import RegistryServer
from support.faultproxy import FaultProxy
from test_push_faults import assert_complete, model_with_weights

# The fault tests' setup: a registry holding the base image, and a fault proxy before it.
registry = faults.registry
proxy = faults.proxy

MB = 1024 * 1024
UPLOADS = r"/blobs/uploads/"


def streamed_patches(proxy: FaultProxy) -> list[str]:
    return [e.outcome for e in proxy.requests("PATCH") if e.body_length is None]


def test_a_first_push_streams_the_weights_layer_while_it_is_built(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 20 * MB)
    result = push(model, f"{proxy.host}/first/model:v1")

    assert streamed_patches(proxy) == ["202"]
    weights = [layer for layer in result.layers if layer.role == "weights"]
    assert len(weights) == 1
    # Sent once, all of it: the stream was the upload, not an extra one.
    assert weights[0].outcome is Outcome.UPLOADED
    assert weights[0].bytes_sent == weights[0].size > 20 * MB
    assert registry.tags("first/model") == {"v1": str(result.digest)}
    assert_complete(registry, "first/model")
    assert registry.open_uploads("first/model") == []


def test_a_repository_with_tags_gets_digests_first_and_skips_what_it_has(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_with_weights(tmp_path, 20 * MB)
    first = push(model, f"{proxy.host}/again/model:v1")
    assert streamed_patches(proxy) == ["202"]
    proxy.log.clear()

    # A new machine (an empty cache) pushes the same model again: nothing goes up.
    monkeypatch.setenv("SKIFF_CACHE_DIR", str(tmp_path / "other-cache"))
    second = push(model, f"{proxy.host}/again/model:v2")
    assert second.digest == first.digest
    assert proxy.requests("PATCH") == []
    assert {str(layer.outcome) for layer in second.layers} == {"skipped"}
    assert second.bytes_uploaded == 0
    assert len(proxy.requests("GET", "/tags/list")) == 1  # asked once a layer proved large

    # Nothing to build: the question is not even asked.
    proxy.log.clear()
    push(model, f"{proxy.host}/again/model:v3")
    assert proxy.requests("GET", "/tags/list") == []


def test_chunked_uploads_asked_for_are_not_replaced_by_a_stream(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 20 * MB)
    push(model, f"{proxy.host}/chunks/model:v1", PushOptions(chunk_size=8 * MB))
    assert streamed_patches(proxy) == []
    assert len(proxy.requests("PATCH")) == 3  # 20 MB + table.bin + tar headers in 8 MB chunks


def test_a_broken_stream_is_given_up_and_the_built_layer_goes_up(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 20 * MB)
    fault = proxy.reset("PATCH", UPLOADS, after_body_bytes=3 * MB, chunked=True)
    result = push(model, f"{proxy.host}/broken/model:v1")

    assert fault.fired == 1
    assert streamed_patches(proxy) == ["reset"]  # and no second stream for the same push
    declared = [e for e in proxy.requests("PATCH") if e.body_length is not None]
    weights = next(layer for layer in result.layers if layer.role == "weights")
    assert [e.body_length for e in declared] == [weights.size]
    assert weights.bytes_sent == weights.size  # the broken attempt is not counted
    assert registry.tags("broken/model") == {"v1": str(result.digest)}
    assert_complete(registry, "broken/model")


def test_a_layer_whose_build_fails_is_not_committed_and_its_session_is_cancelled(
    tmp_path: Path, registry: RegistryServer
) -> None:
    layout = Layout.open(tmp_path / "oci")
    followed: list[GrowingBlob] = []
    ref = parse(f"{registry.host}/failing/model:v1")
    client = RegistryClient(ref.repository, ANONYMOUS, options=TransportOptions.from_env())
    results: list[object] = []
    with client:
        writer = layout.writer(watch=followed.append)
        (blob,) = followed
        reader = threading.Thread(target=lambda: results.append(stream_growing(client, blob)))
        reader.start()
        for _ in range(12):
            writer.write(os.urandom(MB))
        writer.abort()  # the build failed
        reader.join(timeout=30)
        assert not reader.is_alive()

    assert results == [None]
    assert blob.failed and blob.digest is None
    assert registry.open_uploads("failing/model") == []
    assert registry.tags("failing/model") == {}
    assert list(layout.blob_dir.iterdir()) == []


def test_a_growing_blob_reads_back_exactly_what_was_written(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "oci")
    followed: list[GrowingBlob] = []
    data = os.urandom(5 * MB + 123)
    read: list[bytes] = []

    def follow() -> None:
        (blob,) = followed
        with blob.open() as handle:
            got = 0
            while True:
                complete = blob.digest is not None
                available = blob.wait(got, 5.0)
                if available > got:
                    read.append(handle.read(available - got))
                    got += len(read[-1])
                elif complete:
                    return

    with layout.writer(watch=followed.append) as writer:
        reader = threading.Thread(target=follow)
        reader.start()
        for start in range(0, len(data), 300_000):
            writer.write(data[start : start + 300_000])
        digest = writer.commit()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert b"".join(read) == data
    assert digest == Digest.of(data) == followed[0].digest
    with followed[0].open() as handle:  # the committed blob, under its digest
        assert handle.read() == data


def test_a_session_opened_as_the_push_is_cancelled_is_closed_at_once(
    registry: RegistryServer,
) -> None:
    """A worker can open a session just after the push was cancelled (cancel() has already
    closed the sessions it knew of): that one is closed too, and the worker stops."""
    repo = "demo/cancelled"
    ref = parse(f"{registry.host}/{repo}:v1")
    with RegistryClient(ref.repository, ANONYMOUS, options=TransportOptions.from_env()) as client:
        cancellation = Cancellation()
        cancellation.cancel()
        session = client.start_upload()
        assert session is not None
        assert registry.open_uploads(repo)  # the registry holds it
        with pytest.raises(UploadCancelled):
            cancellation.opened(client, session)
    assert registry.open_uploads(repo) == []
