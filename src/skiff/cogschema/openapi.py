"""The OpenAPI 3.0.2 document Cog writes for a predictor (coglet serves it and validates by it)."""

from __future__ import annotations

from typing import Any

from skiff.cogschema.gojson import Ordered, finish
from skiff.cogschema.parser import InputField, Predictor
from skiff.cogschema.types import primitive_json, title_case


def _input_property(f: InputField, enums: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    prop: dict[str, Any] = {"x-order": f.order}
    info = f.info
    if info.choices:
        # Choices become an enum component named after the input, referenced through allOf.
        enum_type = primitive_json(f.ftype.primitive).get("type") or "string"
        enums.append(
            (
                f.name,
                {
                    "title": f.name,
                    "description": "An enumeration.",
                    "enum": [c.to_json() for c in info.choices],
                    "type": enum_type,
                },
            )
        )
        prop["allOf"] = [{"$ref": f"#/components/schemas/{f.name}"}]
    else:
        prop["title"] = title_case(f.name)
        prop.update(f.itype.json())

    rep = f.ftype.repetition
    nullable = rep in ("optional", "optional_repeated") or f.itype.nullable
    # `api_key: Secret = Input(default=None)` is Cog's documented optional credential; None on any
    # other non-nullable input means "no default" (a seed drawn at run time), so it stays required.
    default = info.default
    if (
        f.ftype.primitive == "Secret"
        and rep == "required"
        and default is not None
        and default.kind == "none"
    ):
        nullable = True
    has_default = default is not None and not (default.kind == "none" and not nullable)
    if not has_default and (f.itype.kind == "union" or rep in ("required", "repeated")):
        prop["\0required"] = True  # collected by the caller, removed below
    if has_default and default is not None:
        prop["default"] = default.to_json()
    if nullable:
        prop["nullable"] = True
    if info.description is not None:
        prop["description"] = info.description
    if info.ge is not None:
        prop["minimum"] = info.ge
    if info.le is not None:
        prop["maximum"] = info.le
    if info.min_length is not None:
        prop["minLength"] = info.min_length
    if info.max_length is not None:
        prop["maxLength"] = info.max_length
    if info.regex is not None:
        prop["pattern"] = info.regex
    if info.deprecated:
        prop["deprecated"] = True
    if info.accept is not None:
        prop["x-cog-accept"] = info.accept
    return prop


def _input_schema(p: Predictor) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    props = Ordered()
    required: list[str] = []
    enums: list[tuple[str, dict[str, Any]]] = []
    for f in p.inputs:
        prop = _input_property(f, enums)
        if prop.pop("\0required", False):
            required.append(f.name)
        props[f.name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema, enums


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "Successful Response",
        "content": {"application/json": {"schema": schema}},
    }


_VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
    },
}


def build(p: Predictor, version: str) -> dict[str, Any]:
    """The document for one mode, keys in the order Cog writes them."""
    if p.train:
        endpoint, request, response = "/trainings", "TrainingRequest", "TrainingResponse"
        cancel, cancel_param = "/trainings/{training_id}/cancel", "training_id"
        summary, description = "Train", "Run a single training on the model"
        op_id, cancel_op = "train_trainings_post", "cancel_trainings__training_id__cancel_post"
        input_key, output_key = "TrainingInput", "TrainingOutput"
    else:
        endpoint, request, response = "/predictions", "PredictionRequest", "PredictionResponse"
        cancel, cancel_param = "/predictions/{prediction_id}/cancel", "prediction_id"
        summary, description = "Predict", "Run a single prediction on the model"
        op_id, cancel_op = (
            "predict_predictions_post",
            "cancel_predictions__prediction_id__cancel_post",
        )
        input_key, output_key = "Input", "Output"

    input_schema, enums = _input_schema(p)
    input_schema["title"] = input_key
    components = Ordered()
    components[input_key] = input_schema
    components[output_key] = p.output.json(top=True)
    for name, schema in enums:
        components[name] = schema
    input_ref = {"$ref": f"#/components/schemas/{input_key}"}
    output_ref = {"$ref": f"#/components/schemas/{output_key}"}
    components[request] = {
        "title": request,
        "type": "object",
        "properties": {"id": {"title": "Id", "type": "string"}, "input": dict(input_ref)},
    }
    components[response] = {
        "title": response,
        "type": "object",
        "properties": {
            "input": dict(input_ref),
            "output": dict(output_ref),
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    components["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    }
    components["HTTPValidationError"] = {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {
                "title": "Detail",
                "type": "array",
                "items": {"$ref": "#/components/schemas/ValidationError"},
            }
        },
    }
    components["ValidationError"] = {
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
    }

    paths = Ordered()
    paths["/"] = {
        "get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _ok({})}}
    }
    paths["/health-check"] = {
        "get": {
            "summary": "Healthcheck",
            "operationId": "healthcheck_health_check_get",
            "responses": {"200": _ok({})},
        }
    }
    main: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "operationId": op_id,
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}
        },
        "responses": {
            "200": _ok({"$ref": f"#/components/schemas/{response}"}),
            "422": _VALIDATION_ERROR,
        },
    }
    if p.streaming and not p.train:
        main["x-cog-streaming"] = True
    paths[endpoint] = {"post": main}
    paths[cancel] = {
        "post": {
            "summary": "Cancel",
            "operationId": cancel_op,
            "parameters": [
                {
                    "required": True,
                    "schema": {"title": title_case(cancel_param), "type": "string"},
                    "name": cancel_param,
                    "in": "path",
                }
            ],
            "responses": {"200": _ok({}), "422": _VALIDATION_ERROR},
        }
    }
    spec = {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
    _remove_title_next_to_ref(spec)
    return finish(spec)  # type: ignore[no-any-return]


def _remove_title_next_to_ref(value: Any) -> None:
    """OpenAPI 3.0 allows no siblings next to $ref (Cog strips a title there)."""
    if isinstance(value, dict):
        if "$ref" in value:
            value.pop("title", None)
        for child in value.values():
            _remove_title_next_to_ref(child)
    elif isinstance(value, list):
        for child in value:
            _remove_title_next_to_ref(child)


def merge(predict: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """One document for a model with both run and train: Cog adds the training paths and
    components the prediction document lacks, then writes every object with sorted keys."""
    paths = dict(predict["paths"])
    for k, v in train["paths"].items():
        paths.setdefault(k, v)
    schemas = dict(predict["components"]["schemas"])
    for k, v in train["components"]["schemas"].items():
        schemas.setdefault(k, v)
    merged = dict(predict)
    merged["paths"] = paths
    merged["components"] = {**predict["components"], "schemas": schemas}
    return finish(merged, sort_all=True)  # type: ignore[no-any-return]
