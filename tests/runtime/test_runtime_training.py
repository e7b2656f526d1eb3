"""Trainings (`train:` in cog.yaml): Cog's /trainings routes and Training* schema components."""

from __future__ import annotations

import base64
from typing import Any

from cog.schema import openapi_schema
from cog.static import static_openapi_schema

from conftest import FIXTURES, CogServer

TRAINER = FIXTURES / "trainer"


def test_schema_has_training_components_and_routes() -> None:
    doc = openapi_schema("predict.py:Predictor", TRAINER, "train.py:train")
    s = doc["components"]["schemas"]
    assert s["TrainingInput"]["title"] == "TrainingInput"
    assert s["TrainingInput"]["properties"]["steps"] == {
        "x-order": 0, "title": "Steps", "type": "integer", "default": 2, "minimum": 1,
        "maximum": 10,
    }  # fmt: skip
    assert s["TrainingOutput"] == {
        "title": "TrainingOutput",
        "type": "object",
        "properties": {"weights": {"title": "Weights", "type": "string", "format": "uri"}},
        "required": ["weights"],
    }
    assert s["TrainingRequest"]["properties"]["input"] == {
        "$ref": "#/components/schemas/TrainingInput"
    }
    assert s["token"]["enum"] == ["w", "x"] and s["mode"]["enum"] == ["a", "b"]
    assert doc["paths"]["/trainings"]["post"]["operationId"] == "train_trainings_post"
    assert "/trainings/{training_id}/cancel" in doc["paths"]
    assert static_openapi_schema("predict.py:Predictor", TRAINER, "train.py:train") == doc


def test_trainings_are_served(start_server: Any) -> None:
    server: CogServer = start_server("trainer", predictor=None)  # both refs from cog.yaml
    assert server.client.get("/").json()["trainings_url"] == "/trainings"
    schema = server.client.get("/openapi.json").json()
    assert "TrainingInput" in schema["components"]["schemas"]
    r = server.client.post("/trainings", json={"id": "t1", "input": {"steps": 3}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["logs"] == "training\n"
    weights = body["output"]["weights"]
    assert weights == "data:text/plain;base64," + base64.b64encode(b"www").decode()
    assert server.client.post("/trainings", json={"input": {"steps": 99}}).status_code == 422
    assert server.client.post("/predictions", json={"input": {"mode": "b"}}).json()["output"] == "b"


def test_no_trainings_without_train(start_server: Any) -> None:
    server: CogServer = start_server("echo")
    assert server.client.post("/trainings", json={"input": {}}).status_code == 404
    assert "trainings_url" not in server.client.get("/").json()
