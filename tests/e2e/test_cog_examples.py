"""Projects from Cog's own integration tests build with skiff and run, with no GPU.

Each folder in cog_examples/ follows a fixture of replicate/cog's test suite (its README says
which): `skiff push` builds it on the Debian + python3 base, the image is pulled back with skopeo,
unpacked with umoci and run with bwrap (helpers of test_image_serves_cog_api), then its
/openapi.json and one prediction are checked against what Cog's own tests expect.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_image_serves_cog_api import (  # the harness of the hello example, shared
    Container,
    UnpackedImage,
    model_image,
)

EXAMPLES = Path(__file__).parent / "cog_examples"
__all__ = ["model_image"]  # a fixture this module uses, imported rather than copied
pytestmark = pytest.mark.timeout(900)  # a cold run makes the base image first (debootstrap)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    assert header.startswith("data:") and header.endswith(";base64"), uri[:80]
    return base64.b64decode(payload)


@pytest.fixture(scope="module")
def serve(
    model_image: Callable[[Path, str], UnpackedImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Container]]:
    """Build, push, pull, unpack and start an example; wait until it is READY."""
    containers: list[Container] = []

    def start(name: str) -> Container:
        image = model_image(EXAMPLES / name, f"cog-example-{name}")
        container = Container(image, tmp_path_factory.mktemp(f"run-{name}") / "server.log")
        containers.append(container)
        container.start()
        container.wait_ready()
        return container

    yield start
    for container in containers:
        container.stop()


def input_schema(container: Container) -> dict[str, Any]:
    response = httpx.get(f"{container.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    schema: dict[str, Any] = response.json()["components"]["schemas"]
    return schema


def predict(container: Container, inputs: dict[str, Any]) -> Any:
    response = httpx.post(f"{container.url}/predictions", json={"input": inputs}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded", f"{body}\nlog:\n{container.log_text()}"
    return body["output"]


def test_string_project(serve: Callable[[str], Container]) -> None:
    container = serve("string-project")
    schemas = input_schema(container)
    assert schemas["Input"]["required"] == ["s"]
    assert schemas["Input"]["properties"]["s"]["type"] == "string"
    assert schemas["Output"]["type"] == "string"

    assert predict(container, {"s": "world"}) == "hello world"


def test_file_project(serve: Callable[[str], Container]) -> None:
    container = serve("file-project")
    schemas = input_schema(container)
    inputs = schemas["Input"]
    assert sorted(inputs["required"]) == ["path", "text"]
    assert inputs["properties"]["text"]["type"] == "string"
    assert inputs["properties"]["path"]["format"] == "uri"
    assert schemas["Output"]["format"] == "uri"

    output = predict(container, {"text": "bar", "path": data_uri(b"baz", "text/plain")})

    # No upload URL: the output file comes back inline. setup() set the "foo" prefix.
    assert decode_data_uri(output) == b"foobarbaz"


def test_many_inputs_project(serve: Callable[[str], Container]) -> None:
    container = serve("many-inputs-project")
    schemas = input_schema(container)
    inputs = schemas["Input"]
    properties = inputs["properties"]
    assert sorted(inputs["required"]) == [
        "choices",
        "image",
        "int_choices",
        "no_default",
        "path",
    ]
    # coglet serves the schema with its keys sorted; x-order keeps the predictor's order.
    assert sorted(properties, key=lambda name: properties[name]["x-order"]) == [
        "no_default",
        "default_without_input",
        "input_with_default",
        "path",
        "image",
        "choices",
        "int_choices",
    ]
    assert properties["default_without_input"]["default"] == "default"
    assert properties["input_with_default"]["default"] == 10
    assert properties["path"]["description"] == "Some path"
    # Choices are enums Cog names after the input, referenced from the property.
    assert schemas["choices"]["enum"] == ["foo", "bar"]
    assert schemas["int_choices"]["enum"] == [3, 4, 5]
    assert properties["int_choices"]["description"] == "hello"

    output = predict(
        container,
        {
            "no_default": "hello",
            "path": data_uri(b"world", "text/plain"),
            "image": data_uri(b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"),
            "choices": "foo",
            "int_choices": 3,
        },
    )

    # The answer Cog's own test_predict_many_inputs expects for these inputs.
    assert output == "hello default 20 world jpg foo 6"


def test_env_project(serve: Callable[[str], Container]) -> None:
    container = serve("env-project")
    assert container.image.env["TEST_VAR"] == "test_value"
    assert container.image.env["NAME"] == "michael"
    assert input_schema(container)["Input"]["required"] == ["name"]

    # The answer Cog's own test_predict_env_vars expects.
    assert predict(container, {"name": "TEST_VAR"}) == "ENV[TEST_VAR]=test_value"


def test_path_list_output_project(serve: Callable[[str], Container]) -> None:
    container = serve("path-list-output-project")
    schemas = input_schema(container)
    assert schemas["Input"]["properties"] == {}
    assert schemas["Output"]["type"] == "array"
    assert schemas["Output"]["items"]["format"] == "uri"

    output = predict(container, {})

    assert [decode_data_uri(item) for item in output] == [b"foo", b"bar", b"baz"]
