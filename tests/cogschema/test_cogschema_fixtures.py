"""One case per fixture: the schema skiff writes is the one Cog 0.23.1 writes for that predictor.

Each folder under fixtures/ is a model folder plus case.json, which states the facts Cog's own
integration tests and generator rules establish for it: substrings of the written bytes, whole
components, the paths, x-cog-streaming, the @cog.concurrent value, or the refusal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skiff import cogschema
from skiff.errors import InvalidInput

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.json").is_file())
SINGLE_PATHS = {
    False: ["/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel"],
    True: ["/", "/health-check", "/trainings", "/trainings/{training_id}/cancel"],
}


def load_case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = json.loads((FIXTURES / name / "case.json").read_text())
    return case


def assert_go_order(value: Any, path: str = "$") -> None:
    """A merged document is written with every object's keys sorted (Go map marshalling)."""
    if isinstance(value, dict):
        assert list(value) == sorted(value), f"keys of {path} are not sorted"
        for k, v in value.items():
            assert_go_order(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_go_order(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", CASES)
def test_fixture(name: str) -> None:
    case = load_case(name)
    folder = FIXTURES / name
    predict, train = case.get("predict"), case.get("train")

    if "error" in case:
        with pytest.raises(cogschema.UnsupportedPredictor) as info:
            cogschema.generate(folder, predict, train)
        assert isinstance(info.value, InvalidInput)  # exit 2 through the CLI's mapping
        assert re.search(case["error"], str(info.value)), str(info.value)
        return

    schema = cogschema.generate(folder, predict, train)
    raw = cogschema.render(folder, predict, train).decode()
    assert json.loads(raw) == schema
    # The dict iterates in the order of the bytes, so a plain json.dumps writes Cog's bytes too.
    separators = (",", ": ") if case.get("indented") else (",", ":")
    assert (
        json.dumps(
            schema,
            separators=separators,
            indent=2 if case.get("indented") else None,
            ensure_ascii=False,
        )
        == raw
    )

    for fragment in case.get("contains", []):
        assert fragment in raw, f"{fragment} not in the written schema"
    components = schema["components"]["schemas"]
    for key, expected in case.get("components", {}).items():
        assert components[key] == expected, f"component {key}"

    expected_paths = case.get("paths") or SINGLE_PATHS[bool(train and not predict)]
    assert list(schema["paths"]) == expected_paths
    for route in schema["paths"].values():
        assert set(route) <= {"get", "post"}  # no PUT of the old server, no /shutdown
    request = components.get("PredictionRequest") or components["TrainingRequest"]
    assert set(request["properties"]) == {"id", "input"}  # no webhook fields
    post = schema["paths"].get("/predictions", {}).get("post", {})
    if "streaming" in case:
        assert post.get("x-cog-streaming", False) is case["streaming"]
    if case.get("indented"):
        assert_go_order(schema)
    else:
        input_props = components.get("Input", components.get("TrainingInput"))["properties"]
        orders = [p["x-order"] for p in input_props.values()]
        assert orders == list(range(len(orders)))  # properties in signature order

    if "concurrency" in case:
        assert cogschema.decorator_concurrency(folder, predict, train) == case["concurrency"]


@pytest.mark.parametrize("name", [n for n in CASES if "concurrency_error" in load_case(n)])
def test_concurrency_refusal(name: str) -> None:
    case = load_case(name)
    with pytest.raises(cogschema.UnsupportedPredictor, match=case["concurrency_error"]):
        cogschema.decorator_concurrency(FIXTURES / name, case.get("predict"), case.get("train"))


def test_no_decorator_means_no_concurrency() -> None:
    assert (
        cogschema.decorator_concurrency(FIXTURES / "static_schema_gen", "predict.py:Predictor")
        is None
    )


def test_bare_concurrent_is_one(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor, concurrent\n\n"
        "class Predictor(BasePredictor):\n"
        "    @concurrent\n"
        "    def predict(self) -> str:\n"
        "        return ''\n"
    )
    assert cogschema.decorator_concurrency(tmp_path, "predict.py:Predictor") == 1


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("predict.py", "invalid predictor reference 'predict.py'"),
        ("../predict.py:Predictor", "outside the model folder"),
        ("missing.py:Predictor", "predictor source missing.py .* does not exist"),
    ],
)
def test_bad_references(tmp_path: Path, ref: str, message: str) -> None:
    with pytest.raises(cogschema.UnsupportedPredictor, match=message):
        cogschema.generate(tmp_path, ref)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("from cog import BasePredictor\n\ndef run(:\n")
    with pytest.raises(cogschema.UnsupportedPredictor, match=r"predict\.py:3: is not valid Python"):
        cogschema.generate(tmp_path, "predict.py:run")


def test_version_is_written_as_given() -> None:
    schema = cogschema.generate(FIXTURES / "function_predictor", "predict.py:run", version="0.23.2")
    assert schema["info"] == {"title": "Cog", "version": "0.23.2"}


def test_go_spelling_of_numbers_and_markup() -> None:
    assert cogschema.dumps({"a": 1e-7, "b": 1e21, "c": 0.00001, "d": 2.5, "e": "<&>"}) == (
        '{"a":1e-7,"b":1e+21,"c":0.00001,"d":2.5,"e":"\\u003c\\u0026\\u003e"}'
    )
