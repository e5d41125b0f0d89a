"""/openapi.json: FastAPI's generated schema plus the request bodies the routes parse themselves."""
from __future__ import annotations

from typing import Any, Dict

from fastapi import FastAPI

from vectordb.server.middleware import OPEN_PATHS
from vectordb.server.service import BODY_MODELS


def install_openapi(app: FastAPI, api_key: bool) -> None:
    """The generated schema plus the hand-documented request bodies and, with a key, its scheme."""

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for model in sorted(BODY_MODELS, key=lambda cls: cls.__name__):
                body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body_schema.pop("$defs", {}))
                schemas[model.__name__] = body_schema
            if api_key:
                components["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                }
                for path, operations in schema.get("paths", {}).items():
                    if path in OPEN_PATHS:
                        continue
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
                        operation.setdefault("responses", {})["401"] = {
                            "description": "missing or invalid API key",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
