"""The OpenAPI document Cog publishes for a predictor (label ``run.cog.openapi_schema``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .introspect import InputSpec, OutputKind, OutputSpec, PredictorInfo, inspect_predictor
from .predictor import PredictorRef, load_target, predict_method_name, train_method_name
from .types import MISSING, Secret


def openapi_schema(
    predictor_ref: str, cwd: str | os.PathLike[str] = ".", trainer_ref: str | None = None
) -> dict[str, Any]:
    """Import the predictor (and trainer; setup() is not run) and describe the API."""
    where = os.fspath(os.path.abspath(cwd))
    target = load_target(PredictorRef.parse(predictor_ref), where)
    training = None
    if trainer_ref is not None:
        trainer = load_target(PredictorRef.parse(trainer_ref), where)
        training = inspect_predictor(trainer, train_method_name(trainer))
    return build_schema(inspect_predictor(target, predict_method_name(target)), training)


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


def input_schema(info: PredictorInfo, title: str = "Input") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "title": title,
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


def output_schema(output: OutputSpec, title: str = "Output") -> dict[str, Any]:
    schema: dict[str, Any] = {"title": title}
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


@dataclass(frozen=True)
class _Mode:
    """The names Cog uses for predictions, and for trainings (``train:`` in cog.yaml)."""

    route: str
    id_name: str
    request: str
    response: str
    input: str
    output: str
    summary: str
    description: str
    operation: str  # verb in operation ids: predict / train


PREDICT = _Mode(
    "predictions",
    "prediction_id",
    "PredictionRequest",
    "PredictionResponse",
    "Input",
    "Output",
    "Predict",
    "Run a single prediction on the model",
    "predict",
)
TRAIN = _Mode(
    "trainings", "training_id", "TrainingRequest", "TrainingResponse", "TrainingInput",
    "TrainingOutput", "Train", "Run a training session", "train",
)  # fmt: skip


def _simple(summary: str, operation: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation,
        "responses": {"200": _json_response(None)},
    }


def _mode_paths(mode: _Mode) -> dict[str, Any]:
    id_param = {
        "required": True,
        "schema": {"title": mode.id_name.replace("_", " ").title(), "type": "string"},
        "name": mode.id_name,
        "in": "path",
    }
    prefer = {
        "required": False,
        "schema": {"title": "Prefer", "type": "string"},
        "name": "prefer",
        "in": "header",
    }

    def create(operation: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "summary": mode.summary,
            "description": mode.description,
            "operationId": operation,
            "parameters": parameters,
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{mode.request}"}}
                }
            },
            "responses": {"200": _json_response(mode.response), "422": _VALIDATION_ERROR},
        }

    route, key = mode.route, mode.id_name
    return {
        f"/{route}": {"post": create(f"{mode.operation}_{route}_post", [prefer])},
        f"/{route}/{{{key}}}": {
            "put": create(f"{mode.operation}_idempotent_{route}__{key}__put", [id_param, prefer])
        },
        f"/{route}/{{{key}}}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": f"cancel_{route}__{key}__cancel_post",
                "parameters": [id_param],
                "responses": {"200": _json_response(None), "422": _VALIDATION_ERROR},
            }
        },
    }


def _mode_components(mode: _Mode) -> dict[str, Any]:
    return {
        mode.request: {
            "title": mode.request,
            "type": "object",
            "properties": {
                "id": {"title": "Id", "type": "string"},
                "input": {"$ref": f"#/components/schemas/{mode.input}"},
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
        mode.response: {
            "title": mode.response,
            "type": "object",
            "properties": {
                "input": {"$ref": f"#/components/schemas/{mode.input}"},
                "output": {"$ref": f"#/components/schemas/{mode.output}"},
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


def build_schema(info: PredictorInfo, training: PredictorInfo | None = None) -> dict[str, Any]:
    """The whole OpenAPI 3.0.2 document for a predictor (and its trainer, if any)."""
    components = _fixed_components()
    paths = {
        "/": {"get": _simple("Root", "root__get")},
        "/health-check": {"get": _simple("Healthcheck", "healthcheck_health_check_get")},
    }
    modes = [(PREDICT, info)] + ([(TRAIN, training)] if training is not None else [])
    for mode, mode_info in modes:
        paths.update(_mode_paths(mode))
        components.update(_mode_components(mode))
        components[mode.input] = input_schema(mode_info, mode.input)
        components[mode.output] = output_schema(mode_info.output, mode.output)
        components.update(enum_schemas(mode_info))
    paths["/shutdown"] = {"post": _simple("Start Shutdown", "start_shutdown_shutdown_post")}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }
