"""OpenAPI 3 document generated from the route table and the proto descriptors."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from api_gateway.routes import ROUTES, Route
from api_gateway.translate import enum_aliases
from core import validation

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # The proto JSON mapping writes 64-bit integers as strings.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {"type": "string"},
}
# Response-only aliases the earlier HTTP API's clients read.
_ALIASES = {
    "Job": {"jobId": {"type": "string", "description": "Same as id (earlier API)"}},
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "HTTP status"},
                "status": {"type": "string", "description": "gRPC status name"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}


class SchemaBuilder:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, descriptor: Any) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.name
        if name not in self.components:
            self.components[name] = {}  # placeholder against recursion
            props = {f.json_name: self.field(f) for f in descriptor.fields}
            props.update(_ALIASES.get(name, {}))
            self.components[name] = {"type": "object", "properties": props}
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: Any) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, field: Any) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": sorted(enum_aliases(field.enum_type))}
        schema = dict(_SCALARS[field.type])
        rule = validation.TEXT_RULES.get(field.full_name)
        if rule is not None and rule.max_chars is not None:
            schema["maxLength"] = rule.max_chars
        return schema


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def operation(route: Route, schemas: SchemaBuilder) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.rpc}_{route.method.lower()}_{len(_path_params(route.path))}",
        "summary": route.summary,
        "tags": [route.tag],
        "responses": {
            str(route.status): {
                "description": "Success",
                "content": {"application/json": {"schema": schemas.ref(route.response.DESCRIPTOR)}},
            },
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _path_params(route.path)
    ]
    for q in route.query:
        schema: dict[str, Any] = {"type": q.type}
        if q.enum is not None:
            schema = schemas.single(q.enum.DESCRIPTOR.fields_by_camelcase_name[q.enum_field])
        params.append(
            {"name": q.name, "in": "query", "required": False, "schema": schema, "description": q.description}
        )
    if params:
        op["parameters"] = params
    if route.body is not None:
        body_schema: dict[str, Any] = schemas.ref(route.body.DESCRIPTOR)
        if route.body_extra:
            body_schema = {"allOf": [body_schema, {"type": "object", "properties": route.body_extra}]}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if not route.public:
        op["security"] = [{"bearerAuth": []}]
    return op


def build_openapi() -> dict[str, Any]:
    schemas = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route, schemas)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jobmesh REST API",
            "version": "1.0.0",
            "description": "The HTTP+JSON surface of jobmesh. Bodies are the proto JSON mapping of the "
            "jobmesh.v1 messages. Log in (POST /api/auth/login), then Authorize with the token.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
