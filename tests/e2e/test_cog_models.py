"""Models of every kind Cog 0.23 builds, built by skiff and served by Cog's own runtime.

Each folder in models/ is built with `skiff push` on the Debian + python3 base, pulled back,
unpacked and run with bwrap (the harness of test_image_serves_cog_api), then driven over HTTP.
The answers are coglet's: a class predictor with inputs of several types and a build step that
imports a package from python_packages, a union input, a pydantic output, a streaming output,
and a function predictor reading its request's context on a pinned SDK.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from test_image_serves_cog_api import (  # the harness of the hello example, shared
    MODELS,
    Container,
    UnpackedImage,
    model_image,
)

__all__ = ["model_image"]  # a fixture this module uses, imported rather than copied
pytestmark = pytest.mark.timeout(900)  # a cold run makes the base image first (debootstrap)


@pytest.fixture(scope="module")
def serve(
    model_image: Callable[..., UnpackedImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Container]]:
    """Build, push, pull, unpack and start a model of models/ once; wait until it is READY."""
    started: dict[str, Container] = {}

    def start(name: str) -> Container:
        if name not in started:
            image = model_image(MODELS / name, f"model-{name}")
            container = Container(image, tmp_path_factory.mktemp(f"run-{name}") / "server.log")
            started[name] = container
            container.start()
            container.wait_ready()
        return started[name]

    yield start
    for container in started.values():
        container.stop()


def predict(container: Container, inputs: dict[str, Any], **extra: Any) -> httpx.Response:
    return httpx.post(f"{container.url}/predictions", json={"input": inputs, **extra}, timeout=60)


def output(container: Container, inputs: dict[str, Any], **extra: Any) -> Any:
    response = predict(container, inputs, **extra)
    assert response.status_code == 200, f"{response.text}\nlog:\n{container.log_text()}"
    body = response.json()
    assert body["status"] == "succeeded", f"{body}\nlog:\n{container.log_text()}"
    return body["output"]


def schemas(container: Container) -> dict[str, Any]:
    response = httpx.get(f"{container.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    served: dict[str, Any] = response.json()
    assert served == json.loads(container.image.labels["run.cog.openapi_schema"])
    found: dict[str, Any] = served["components"]["schemas"]
    return found


def error_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [str(error["loc"][-1]) for error in response.json()["detail"]]


def test_inputs_of_several_types_and_a_step_after_the_packages(
    serve: Callable[[str], Container],
) -> None:
    kinds = serve("kinds")
    properties = schemas(kinds)["Input"]["properties"]
    in_order = sorted(properties, key=lambda name: properties[name]["x-order"])
    assert in_order == ["text", "count", "scale", "loud", "color", "words", "note"]

    answer = output(
        kinds,
        {
            "text": "ab",
            "count": 3,
            "scale": 2.5,
            "loud": True,
            "color": "green",
            "words": ["x", "y"],
        },
    )

    # build.run ran with the pydantic of python_packages importable: Cog's order.
    assert answer == "ABABAB scale=2.5 color=green words=x+y note=None built=2.10.6"
    assert output(kinds, {"text": "q", "note": "n"}).startswith("qq scale=0.5 color=red")


def test_ill_typed_inputs_are_refused_as_cog_refuses_them(
    serve: Callable[[str], Container],
) -> None:
    kinds = serve("kinds")
    assert error_fields(predict(kinds, {"text": "a", "count": "3"})) == ["count"]
    assert error_fields(predict(kinds, {"text": "a", "loud": 1})) == ["loud"]
    assert error_fields(predict(kinds, {"text": "a", "count": 11})) == ["count"]
    assert error_fields(predict(kinds, {"text": "a", "color": "blue"})) == ["color"]
    assert error_fields(predict(kinds, {"count": 2})) == ["text"]


def test_union_input_takes_either_kind(serve: Callable[[str], Container]) -> None:
    union = serve("union")
    value = schemas(union)["Input"]["properties"]["value"]
    assert sorted(item["type"] for item in value["anyOf"]) == ["number", "string"]

    assert output(union, {"value": "word"}) == "str:word"
    assert output(union, {"value": 2.5}) == "float:2.5"
    assert error_fields(predict(union, {"value": [1]})) == ["value"]


def test_pydantic_model_output(serve: Callable[[str], Container]) -> None:
    structured = serve("structured")
    out = schemas(structured)["Output"]
    assert out["type"] == "object"
    assert set(out["properties"]) == {"word", "length", "letters"}

    assert output(structured, {"word": "banana"}) == {
        "word": "banana",
        "length": 6,
        "letters": ["a", "b", "n"],
    }


def test_streaming_output_arrives_piece_by_piece(serve: Callable[[str], Container]) -> None:
    stream = serve("stream")
    out = schemas(stream)["Output"]
    assert (out["type"], out["x-cog-array-type"]) == ("array", "iterator")

    assert output(stream, {"n": 3}) == ["token0 ", "token1 ", "token2 "]


def test_streaming_predictor_answers_with_server_sent_events(
    serve: Callable[[str], Container],
) -> None:
    """@cog.streaming: the schema says so (x-cog-streaming), and coglet, which streams only
    then, sends each chunk as an event as it is produced."""
    stream = serve("stream")
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream(
        "POST",
        f"{stream.url}/predictions",
        json={"input": {"n": 2}},
        headers={"Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))

    assert [name for name, _ in events] == ["start", "output", "output", "completed"]
    assert events[0][1]["status"] == "processing"
    assert [data["chunk"] for name, data in events if name == "output"] == ["token0 ", "token1 "]
    assert events[-1][1]["output"] == ["token0 ", "token1 "]


def test_function_predictor_reads_its_context_on_the_pinned_sdk(
    serve: Callable[[str], Container],
) -> None:
    hello = serve("hello-context")
    assert hello.image.env["COG_PREDICT_TYPE_STUB"] == "predict.py:run"
    assert hello.image.labels["run.cog.version"] == "0.23.0"  # cog.yaml's build.sdk_version
    health = httpx.get(f"{hello.url}/health-check", timeout=10).json()
    assert (health["version"]["python_sdk"], health["version"]["coglet"]) == ("0.23.0", "0.23.0")
    assert schemas(hello)["Input"]["properties"]["name"]["default"] == "world"

    assert output(hello, {"name": "ana"}, context={"user": "bo"}) == "hello ana (asked by bo)"
    assert output(hello, {}) == "hello world (asked by nobody)"
