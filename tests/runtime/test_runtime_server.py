"""Cog's HTTP API, served by `python -m cog.server.http` as a real subprocess."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import CogServer, Receiver, python_stdlib_only, runtime_env

ASYNC = {"Prefer": "respond-async"}


def test_listens_at_once_and_reports_setup(start_server: Any) -> None:
    # A bare interpreter start, measured alike, so a loaded machine does not fail the test;
    # and the best of three starts, to filter out scheduling noise on a shared 2-core box.
    started = time.monotonic()
    subprocess.run([*python_stdlib_only(), "-c", "pass"], check=True, env=runtime_env())
    bare = time.monotonic() - started
    attempts = []
    for _ in range(3):
        server: CogServer = start_server("echo", ready=False)
        attempts.append(server.wait_listening() - bare)
        if attempts[-1] < 1.0:
            break
        server.stop()
    assert min(attempts) < 1.0, attempts
    first = server.client.get("/health-check").json()
    assert first["status"] in ("STARTING", "READY")
    body = server.wait_status("READY")
    assert body["setup"]["status"] == "succeeded"
    assert body["setup"]["logs"] == "loading weights\n"
    assert body["setup"]["completed_at"] >= body["setup"]["started_at"]
    index = server.client.get("/").json()
    assert index["predictions_url"] == "/predictions"
    schema = server.client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"
    assert server.client.get("/nope").status_code == 404


def test_predictor_from_cog_yaml(start_server: Any) -> None:
    server: CogServer = start_server("echo", predictor=None)
    r = server.client.post("/predictions/", json={"input": {"text": "a b"}})  # trailing /
    assert r.status_code == 200
    assert r.json()["output"] == ["a", "b"]


def test_sync_prediction(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post(
        "/predictions", json={"id": "p1", "input": {"text": "hi there", "token": "s3cret"}}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "p1"
    assert body["status"] == "succeeded"
    assert body["output"] == ["hi", "there"]
    assert body["error"] is None
    assert body["logs"] == "echoing 'hi there'\ntoken is **********\n"
    assert body["input"] == {"text": "hi there", "token": "**********"}
    assert body["metrics"]["predict_time"] >= 0
    assert body["created_at"] <= body["started_at"] <= body["completed_at"]
    assert "s3cret" not in r.text


def test_invalid_input_is_422_naming_the_field(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post("/predictions", json={"input": {"repeat": 9}})
    assert r.status_code == 422
    assert r.json() == {
        "detail": [
            {
                "loc": ["body", "input", "text"],
                "msg": "field required",
                "type": "value_error.missing",
            },
            {
                "loc": ["body", "input", "repeat"],
                "msg": "ensure this value is less than or equal to 3",
                "type": "value_error.number.not_le",
            },
        ]
    }
    r = server.client.post(
        "/predictions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "value_error.jsondecode"
    r = server.client.post(
        "/predictions", json={"input": {"text": "x"}, "webhook_events_filter": ["bogus"]}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "webhook_events_filter"]


def test_async_prediction_streams_webhooks(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post(
        "/predictions",
        headers=ASYNC,
        json={
            "id": "a1",
            "input": {"text": "one two three four", "delay": 0.25},
            "webhook": f"{receiver.url}/hook",
        },
    )
    assert r.status_code == 202
    assert r.json()["id"] == "a1"
    assert r.json()["status"] == "starting"
    started = time.monotonic()
    events = receiver.wait_for(lambda ev: any(e["status"] == "succeeded" for e in ev))
    elapsed = time.monotonic() - started
    assert events[0]["status"] == "starting"  # the start event
    final = events[-1]
    assert final["status"] == "succeeded"
    assert final["output"] == ["one", "two", "three", "four"]
    assert final["logs"] == "echoing 'one two three four'\n"
    progress = events[1:-1]
    partial = [e["output"] for e in progress if e["output"]]
    assert partial, "outputs are sent while the prediction runs"
    assert all(final["output"][: len(p)] == p for p in partial)
    # Output and logs events are throttled to one per 500 ms, as Cog does.
    assert len(progress) <= elapsed / 0.5 + 2


def test_webhook_events_filter(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("echo")
    server.client.post(
        "/predictions",
        headers=ASYNC,
        json={
            "input": {"text": "a b c"},
            "webhook": receiver.url,
            "webhook_events_filter": ["completed"],
        },
    )
    receiver.wait_for(lambda ev: len(ev) >= 1)
    time.sleep(0.3)  # nothing else may follow
    assert [e["status"] for e in receiver.events] == ["succeeded"]


def test_cancel_a_running_prediction(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("echo")
    server.client.post(
        "/predictions",
        headers=ASYNC,
        json={"id": "c1", "input": {"text": "w " * 50, "delay": 0.2}, "webhook": receiver.url},
    )
    receiver.wait_for(lambda ev: any(e["output"] for e in ev))
    assert server.client.post("/predictions/c1/cancel").status_code == 200
    events = receiver.wait_for(lambda ev: ev[-1]["status"] == "canceled", timeout=5)
    assert len(events[-1]["output"]) < 50
    assert events[-1]["completed_at"] is not None
    server.wait_status("READY")
    assert server.client.post("/predictions/c1/cancel").status_code == 404


def test_busy_is_409(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post(
        "/predictions",
        headers=ASYNC,
        json={"id": "long", "input": {"text": "w " * 50, "delay": 0.2}},
    )
    assert r.status_code == 202
    server.wait_status("BUSY")
    r = server.client.post("/predictions", json={"input": {"text": "x"}})
    assert r.status_code == 409
    server.client.post("/predictions/long/cancel")
    server.wait_status("READY")
    assert server.client.post("/predictions", json={"input": {"text": "x"}}).status_code == 200


def test_concurrency_setting_allows_parallel_predictions(start_server: Any) -> None:
    server: CogServer = start_server("echo", COG_MAX_CONCURRENCY="2")
    results: list[dict[str, Any]] = []

    def run(text: str) -> None:
        r = httpx.post(
            f"{server.url}/predictions", timeout=10, json={"input": {"text": text, "delay": 0.2}}
        )
        results.append(r.json())

    threads = [threading.Thread(target=run, args=(t,)) for t in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each prediction's logs are its own even though both ran at once.
    assert sorted(r["logs"] for r in results) == ["echoing 'left'\n", "echoing 'right'\n"]
    assert all(r["status"] == "succeeded" for r in results)


def test_put_is_idempotent(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    body = {"input": {"text": "w " * 20, "delay": 0.1}}
    first = server.client.put("/predictions/same", headers=ASYNC, json=body)
    second = server.client.put("/predictions/same", headers=ASYNC, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] == "same"
    mismatch = server.client.put("/predictions/other", json={"id": "x", **body})
    assert mismatch.status_code == 422
    # A synchronous retry waits for the running prediction and answers with its result.
    threading.Timer(0.3, lambda: httpx.post(f"{server.url}/predictions/same/cancel")).start()
    waited = server.client.put("/predictions/same", json=body)
    assert waited.status_code == 200
    assert waited.json()["id"] == "same" and waited.json()["status"] == "canceled"


def test_file_input_and_output_as_data_uris(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("files")
    doc = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    r = server.client.post("/predictions", json={"input": {"document": doc}})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == "data:text/plain;base64," + base64.b64encode(b"hello!").decode()
    # As in Cog, a returned temporary file is deleted once sent.
    assert not Path(r.json()["logs"].splitlines()[-1]).exists()
    # An http(s) URL is downloaded first.
    receiver.uploads["/doc.txt"] = b"remote"
    r = server.client.post(
        "/predictions", json={"input": {"document": f"{receiver.url}/doc.txt", "suffix": "?"}}
    )
    assert r.json()["output"] == "data:text/plain;base64," + base64.b64encode(b"remote?").decode()
    assert r.json()["logs"].splitlines()[0] == "doc.txt"
    # Without an extension in the URL, the file gets one from the Content-Type.
    receiver.uploads["/download"] = b"typed"
    r = server.client.post("/predictions", json={"input": {"document": f"{receiver.url}/download"}})
    assert r.json()["logs"].splitlines()[0] == "download.txt"
    # A download failure fails the prediction with a message, not a crash.
    r = server.client.post("/predictions", json={"input": {"document": f"{receiver.url}/none"}})
    assert r.json()["status"] == "failed"
    assert "failed to download input file" in r.json()["error"]


def test_file_output_is_uploaded_when_an_upload_url_is_set(
    start_server: Any, receiver: Receiver
) -> None:
    server: CogServer = start_server("files", COG_UPLOAD_URL=f"{receiver.url}/uploads/")
    doc = "data:text/plain;base64," + base64.b64encode(b"up").decode()
    r = server.client.post("/predictions", json={"input": {"document": doc}})
    assert r.json()["output"] == f"{receiver.url}/stored/uploads/out.txt"
    assert receiver.uploads["/uploads/out.txt"] == b"up!"


def test_setup_failure(start_server: Any) -> None:
    server: CogServer = start_server("broken", ready=False)
    body = server.wait_status("SETUP_FAILED")
    assert "weights missing" in body["setup"]["logs"]
    r = server.client.post("/predictions", json={"input": {"x": 1}})
    assert r.status_code == 503


def test_shutdown_stops_the_server(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    assert server.client.post("/shutdown").status_code == 200
    try:
        assert server.proc.wait(5) == 0
    except subprocess.TimeoutExpired as e:
        raise AssertionError("server still running after /shutdown") from e


def test_await_explicit_shutdown_ignores_sigterm(start_server: Any) -> None:
    server: CogServer = start_server(
        "echo", args=("--await-explicit-shutdown", "--x-mode", "predict")
    )
    server.proc.terminate()
    time.sleep(0.3)
    assert server.proc.poll() is None
    assert server.client.get("/health-check").json()["status"] == "READY"
    server.client.post("/shutdown")
    assert server.proc.wait(5) == 0


def test_sigterm_stops_the_server(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    server.proc.terminate()
    assert server.proc.wait(5) == 0


def test_numeric_ids_are_strings(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    r = server.client.post("/predictions", json={"id": 7, "input": {"text": "x"}})
    assert r.json()["id"] == "7"


def test_cancel_interrupts_a_blocking_call(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("echo", predictor="predict.py:Sleeper")
    server.client.post(
        "/predictions",
        headers=ASYNC,
        json={"id": "s1", "input": {"seconds": 60}, "webhook": receiver.url},
    )
    receiver.wait_for(lambda ev: any("sleeping" in e["logs"] for e in ev))
    started = time.monotonic()
    assert server.client.post("/predictions/s1/cancel").status_code == 200
    events = receiver.wait_for(lambda ev: ev[-1]["status"] == "canceled", timeout=10)
    assert time.monotonic() - started < 3
    assert events[-1]["logs"] == "sleeping\ncleaning up\n"
    server.wait_status("READY")


def test_cancel_with_concurrent_predictions(start_server: Any, receiver: Receiver) -> None:
    server: CogServer = start_server("echo", COG_MAX_CONCURRENCY="2")
    for pid in ("t1", "t2"):
        server.client.post(
            "/predictions",
            headers=ASYNC,
            json={"id": pid, "input": {"text": "w " * 50, "delay": 0.1}, "webhook": receiver.url},
        )
    server.wait_status("BUSY")
    assert server.client.post("/predictions/t1/cancel").status_code == 200
    receiver.wait_for(lambda ev: any(e["id"] == "t1" and e["status"] == "canceled" for e in ev))
    assert server.wait_status("READY", timeout=2)  # t1's slot is free at once
    server.client.post("/predictions/t2/cancel")
    receiver.wait_for(lambda ev: any(e["id"] == "t2" and e["status"] == "canceled" for e in ev))


def test_setup_and_predict_run_on_the_main_thread(start_server: Any) -> None:
    server: CogServer = start_server("echo", predictor="predict.py:MainThreadOnly")
    assert server.client.post("/predictions", json={}).json()["output"] == "MainThread"


def test_user_healthcheck(start_server: Any) -> None:
    well: CogServer = start_server("echo", predictor="predict.py:Unwell")
    assert well.client.get("/health-check").json()["status"] == "READY"
    sick: CogServer = start_server("echo", ready=False, predictor="predict.py:Unwell", UNWELL="1")
    body = sick.wait_status("UNHEALTHY")
    assert body["user_healthcheck_error"] == "healthcheck() returned False"
