"""The seed API's routers, one per resource, over the shared service layer (vectordb/server/service.py)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

from fastapi import APIRouter, Path
from fastapi.responses import Response
from typing_extensions import Annotated

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.service import Service

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


def answer(result: Any = None) -> Response:
    """The JSON answer of a route: what the call returned, or {"ok": true} for None."""
    return FastJSONResponse(OK if result is None else result)


def collection_route(router: APIRouter, svc: Service, method: str, action: str, endpoint: str,
                     handler: Callable[[str, Any], Response], *, body: Optional[type] = None,
                     response_model: type = m.OkResponse, tag: str, summary: Optional[str] = None) -> None:
    """Adds `METHOD /collections/{name}/<action>`: parse the JSON body (the model `body`, if any), run
    `handler(name, parsed body)` on the engine pool, answer with its response. `endpoint` names the
    route (its OpenAPI operation id derives from it)."""

    def run(name: str, body: Any = None) -> Response:
        return handler(name, body)

    # FastAPI reads the parameters from the signature: the body parameter exists only with a model.
    params = [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=CollectionName)]
    if body is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=body,
                                        default=svc.json_body(body)))
    run.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    router.add_api_route(f"/collections/{{name}}/{action}", svc.engine(run), methods=[method], name=endpoint,
                         response_model=response_model, tags=[tag], responses=ERRORS_COLLECTION, summary=summary,
                         openapi_extra=request_body(body) if body is not None else None)
