"""The OpenAPI document Cog publishes for a predictor (label ``run.cog.openapi_schema``)."""

from __future__ import annotations

import os
from typing import Any

from .introspect import InputSpec, OutputKind, OutputSpec, PredictorInfo, inspect_predictor
from .predictor import PredictorRef, load_target, predict_method_name
from .types import MISSING, Secret


def openapi_schema(predictor_ref: str, cwd: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """Import the predictor (setup() is not run) and describe its API."""
    ref = PredictorRef.parse(predictor_ref)
    target = load_target(ref, os.fspath(os.path.abspath(cwd)))
    return build_schema(inspect_predictor(target, predict_method_name(target)))


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def _encode_default(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list):
        return [_encode_default(v) for v in value]
    return value


def input_property(spec: InputSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {"x-order": spec.order}
    if spec.choices is not None:
        prop["allOf"] = [{"$ref": f"#/components/schemas/{spec.name}"}]
    else:
        prop["title"] = _title(spec.name)
        prop.update(spec.type.json_type())
    if spec.default is not MISSING and spec.default is not None:
        prop["default"] = _encode_default(spec.default)
    if spec.type.repetition.is_optional:
        prop["nullable"] = True
    for key, value in (
        ("description", spec.description),
        ("minimum", spec.ge),
        ("maximum", spec.le),
        ("minLength", spec.min_length),
        ("maxLength", spec.max_length),
        ("pattern", spec.regex),
        ("deprecated", spec.deprecated),
    ):
        if value is not None:
            prop[key] = value
    return prop


def input_schema(info: PredictorInfo) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "title": "Input",
        "type": "object",
        "properties": {name: input_property(s) for name, s in info.inputs.items()},
    }
    required = [name for name, s in info.inputs.items() if s.required]
    if required:
        schema["required"] = required
    return schema


def enum_schemas(info: PredictorInfo) -> dict[str, Any]:
    """Cog names the enum component after the input, like pydantic did for choices."""
    enums: dict[str, Any] = {}
    for name, spec in info.inputs.items():
        if spec.choices is not None:
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(spec.choices),
                **spec.type.primitive.json_type(),
            }
    return enums


def output_schema(output: OutputSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"title": "Output"}
    if output.kind is OutputKind.ANY:
        return schema
    if output.kind is OutputKind.OBJECT:
        props = {}
        for name, ft in output.fields.items():
            props[name] = {**ft.json_type(), "title": _title(name)}
        schema.update({"type": "object", "properties": props, "required": list(output.fields)})
        return schema
    assert output.type is not None
    item = output.type.primitive.json_type()
    if output.kind is OutputKind.SINGLE:
        schema.update(item)
    else:
        schema.update({"type": "array", "items": item})
    if output.streams:
        schema["x-cog-array-type"] = "iterator"
    if output.kind is OutputKind.CONCAT_ITERATOR:
        schema["x-cog-array-display"] = "concatenate"
    return schema


def _json_response(ref: str | None, description: str = "Successful Response") -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"} if ref else {}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_VALIDATION_ERROR = _json_response("HTTPValidationError", "Validation Error")
_DATE = {"type": "string", "format": "date-time"}


def _paths() -> dict[str, Any]:
    def simple(summary: str, operation: str) -> dict[str, Any]:
        return {
            "summary": summary,
            "operationId": operation,
            "responses": {"200": _json_response(None)},
        }

    def predict(operation: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "summary": "Predict",
            "description": "Run a single prediction on the model",
            "operationId": operation,
            **extra,
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/PredictionRequest"}
                    }
                }
            },
            "responses": {
                "200": _json_response("PredictionResponse"),
                "422": _VALIDATION_ERROR,
            },
        }

    def id_param() -> dict[str, Any]:
        return {
            "required": True,
            "schema": {"title": "Prediction Id", "type": "string"},
            "name": "prediction_id",
            "in": "path",
        }

    prefer = {
        "required": False,
        "schema": {"title": "Prefer", "type": "string"},
        "name": "prefer",
        "in": "header",
    }
    return {
        "/": {"get": simple("Root", "root__get")},
        "/health-check": {"get": simple("Healthcheck", "healthcheck_health_check_get")},
        "/predictions": {"post": predict("predict_predictions_post", {"parameters": [prefer]})},
        "/predictions/{prediction_id}": {
            "put": predict(
                "predict_idempotent_predictions__prediction_id__put",
                {"parameters": [id_param(), prefer]},
            )
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [id_param()],
                "responses": {"200": _json_response(None), "422": _VALIDATION_ERROR},
            }
        },
        "/shutdown": {"post": simple("Start Shutdown", "start_shutdown_shutdown_post")},
    }


def _fixed_components() -> dict[str, Any]:
    return {
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {
                    "title": "Detail",
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ValidationError"},
                }
            },
        },
        "PredictionRequest": {
            "title": "PredictionRequest",
            "type": "object",
            "properties": {
                "id": {"title": "Id", "type": "string"},
                "input": {"$ref": "#/components/schemas/Input"},
                "webhook": {
                    "title": "Webhook",
                    "type": "string",
                    "format": "uri",
                    "maxLength": 65536,
                    "minLength": 1,
                },
                "webhook_events_filter": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/WebhookEvent"},
                    "default": ["start", "output", "logs", "completed"],
                },
                "created_at": {"title": "Created At", **_DATE},
                "output_file_prefix": {"title": "Output File Prefix", "type": "string"},
            },
        },
        "PredictionResponse": {
            "title": "PredictionResponse",
            "type": "object",
            "properties": {
                "input": {"$ref": "#/components/schemas/Input"},
                "output": {"$ref": "#/components/schemas/Output"},
                "id": {"title": "Id", "type": "string"},
                "version": {"title": "Version", "type": "string"},
                "created_at": {"title": "Created At", **_DATE},
                "started_at": {"title": "Started At", **_DATE},
                "completed_at": {"title": "Completed At", **_DATE},
                "status": {"$ref": "#/components/schemas/Status"},
                "error": {"title": "Error", "type": "string"},
                "logs": {"title": "Logs", "type": "string", "default": ""},
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
        "Status": {
            "title": "Status",
            "description": "An enumeration.",
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
        },
        "WebhookEvent": {
            "title": "WebhookEvent",
            "description": "An enumeration.",
            "enum": ["start", "output", "logs", "completed"],
            "type": "string",
        },
        "ValidationError": {
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "type": "object",
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"title": "Message", "type": "string"},
                "type": {"title": "Error Type", "type": "string"},
            },
        },
    }


def build_schema(info: PredictorInfo) -> dict[str, Any]:
    """The whole OpenAPI 3.0.2 document for a predictor."""
    components = _fixed_components()
    components["Input"] = input_schema(info)
    components["Output"] = output_schema(info.output)
    components.update(enum_schemas(info))
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": _paths(),
        "components": {"schemas": components},
    }
