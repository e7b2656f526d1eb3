"""Server-sent events: `Accept: text/event-stream` on a model that opts in with @streaming."""

from __future__ import annotations

import json
import threading
from typing import Any

from conftest import CogServer

SSE = {"Accept": "text/event-stream"}


def parse(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_stream_of_a_prediction(start_server: Any) -> None:
    server: CogServer = start_server("echo", predictor="predict.py:Streamer")
    with server.client.stream(
        "POST", "/predictions", headers=SSE, json={"id": "s", "input": {"text": "a b c"}}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        events = parse(r.read().decode())
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "completed"
    assert events[0][1] == {"id": "s", "status": "processing"}
    assert ("log", {"source": "stdout", "data": "streaming"}) in events
    chunks = [data for name, data in events if name == "output"]
    assert chunks == [
        {"chunk": "a ", "index": 0},
        {"chunk": "b ", "index": 1},
        {"chunk": "c ", "index": 2},
    ]
    assert events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["output"] == ["a ", "b ", "c "]


def test_retry_replays_the_running_stream(start_server: Any) -> None:
    server: CogServer = start_server("echo", predictor="predict.py:Streamer")
    body = {"input": {"text": "x y z", "delay": 0.2}}
    results: list[list[tuple[str, Any]]] = []

    def listen() -> None:
        with server.client.stream("PUT", "/predictions/r1", headers=SSE, json=body) as r:
            results.append(parse(r.read().decode()))

    first = threading.Thread(target=listen)
    first.start()
    server.wait_status("BUSY")
    listen()  # joins while the first is running
    first.join()
    assert len(results) == 2
    assert results[0] == results[1]
    assert [d["chunk"] for n, d in results[0] if n == "output"] == ["x ", "y ", "z "]


def test_models_that_do_not_opt_in_answer_406(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post("/predictions", headers=SSE, json={"input": {"text": "a"}})
    assert r.status_code == 406
    assert "streaming" in r.json()["detail"]
