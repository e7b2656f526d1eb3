"""Progress bars of a push on a terminal, for layers streamed while they are built.

Such a layer has no digest or size when its upload starts; its bar is open-ended and joins the
total once the layer is complete. A stream given up leaves no bar behind, and the same layer's
upload the usual way counts once.
"""

from __future__ import annotations

import io

import pytest

from skiff.digest import Digest
from skiff.registry.upload import BlobResult, Outcome
from skiff.ui import Console, PushProgress

MB = 1_000_000


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> tuple[Console, io.StringIO]:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's rule: a terminal, whatever the file is
    out = io.StringIO()
    console = Console(out)
    assert console.is_terminal
    return console, out


def totals(progress: PushProgress) -> tuple[float, float | None]:
    task = progress._task(progress.total)
    return task.completed, task.total


def test_a_streamed_layer_joins_the_total_when_its_size_is_known(
    terminal: tuple[Console, io.StringIO],
) -> None:
    console, out = terminal
    code = Digest.of(b"code")
    weights = Digest.of(b"weights")
    stream = object()
    with PushProgress(console, show_checks=False) as progress:
        progress.blob_started(code, 2 * MB, "code")
        progress.blob_started(stream, None, "weights")
        progress.blob_progress(stream, 30 * MB)
        assert totals(progress) == (0, 2 * MB)  # an unknown size is not counted yet
        progress.blob_progress(code, 2 * MB)
        progress.blob_finished(code, BlobResult(code, 2 * MB, Outcome.UPLOADED, 2 * MB), "code")
        progress.blob_finished(
            stream, BlobResult(weights, 50 * MB, Outcome.UPLOADED, 50 * MB), "weights"
        )
        assert totals(progress) == (52 * MB, 52 * MB)
    text = out.getvalue()
    assert f"weights  {weights.hex[:12]} uploaded" in text


def test_a_stream_given_up_leaves_no_bar_and_the_layer_counts_once(
    terminal: tuple[Console, io.StringIO],
) -> None:
    console, _out = terminal
    weights = Digest.of(b"weights")
    stream = object()
    with PushProgress(console, show_checks=False) as progress:
        progress.blob_started(stream, None, "weights")
        progress.blob_progress(stream, 10 * MB)
        progress.blob_finished(stream, None, "weights")
        assert len(progress.progress.tasks) == 1  # only the total
        progress.blob_started(weights, 50 * MB, "weights")
        progress.blob_progress(weights, 50 * MB)
        progress.blob_finished(
            weights, BlobResult(weights, 50 * MB, Outcome.UPLOADED, 50 * MB), "weights"
        )
        assert totals(progress) == (50 * MB, 50 * MB)
