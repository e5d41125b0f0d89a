"""The seed API's routers, one per resource, over the shared service layer (vectordb/server/service.py)."""
from __future__ import annotations

from typing import Any, Dict

from fastapi import Path
from typing_extensions import Annotated

from vectordb.server import models as m

OK = {"ok": True}


def request_body(model: type) -> Dict[str, Any]:
    """openapi_extra documenting a body that Service.json_body parses (FastAPI cannot see it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


ERRORS_COLLECTION: Dict[Any, Any] = {
    404: {"model": m.ErrorResponse, "description": "no collection of that name"},
    413: {"model": m.ErrorResponse, "description": "body over VECTORDB_MAX_BODY_BYTES"},
    422: {"model": m.ErrorResponse, "description": "invalid input (names the field and what was expected)"},
}
ERRORS_CREATE: Dict[Any, Any] = {
    409: {"model": m.ErrorResponse, "description": "a collection of that name exists"},
    413: ERRORS_COLLECTION[413],
    422: ERRORS_COLLECTION[422],
}
ERRORS_MODIFY: Dict[Any, Any] = {**ERRORS_COLLECTION, 409: ERRORS_CREATE[409]}

CollectionName = Annotated[str, Path(description="collection name", examples=["images"])]
