"""chroma's /api/v2, the server and its namespaces: heartbeat, version, pre-flight checks, identity,
reset, tenants and databases (mapped onto the catalog as service.py describes)."""
from __future__ import annotations

import uuid
from typing import Any, Dict, Optional

from fastapi import APIRouter, Query
from fastapi.responses import Response
from typing_extensions import Annotated

from vectordb.server import models as m
from vectordb.server.chroma_models import NamePayload
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import request_body
from vectordb.server.service import DEFAULT_DATABASE, DEFAULT_TENANT, Service
from vectordb.validation import MAX_COUNT

V2 = "/api/v2"
TAGS = ["chroma v2"]
# Errors any /api/v2 route may answer, in chroma's shape (chromadb's client raises the class named).
ERRORS: Dict[Any, Any] = {
    400: {"model": m.ErrorResponse, "description": "InvalidArgumentError (or DuplicateID): what was wrong"},
    404: {"model": m.ErrorResponse, "description": "NotFoundError: no such tenant, database or collection"},
    409: {"model": m.ErrorResponse, "description": "UniqueConstraintError: the name exists"},
    413: {"model": m.ErrorResponse, "description": "body over VECTORDB_MAX_BODY_BYTES"},
    415: {"model": m.ErrorResponse, "description": "the body is not JSON"},
    422: {"model": m.ErrorResponse, "description": "a query parameter is invalid"},
}
_DEFAULT_DATABASE_ID = "00000000-0000-0000-0000-000000000000"


def database_info(tenant: str, database: str) -> Dict[str, Any]:
    if tenant == DEFAULT_TENANT and database == DEFAULT_DATABASE:
        database_id = _DEFAULT_DATABASE_ID
    else:  # stable across restarts: derived from the names
        database_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vectordb:{tenant}/{database}"))
    return {"id": database_id, "name": database, "tenant": tenant}


def chroma_system_router(svc: Service) -> APIRouter:
    router = APIRouter(tags=list(TAGS), responses=ERRORS)

    @router.get(V2 + "/heartbeat", summary="Server time in nanoseconds")
    @svc.engine
    def heartbeat() -> Response:
        return FastJSONResponse({"nanosecond heartbeat": int(svc.client.heartbeat())})

    @router.get(V2 + "/healthcheck")
    async def healthcheck() -> Response:
        return FastJSONResponse({"is_executor_ready": True, "is_log_client_ready": True})

    @router.get(V2 + "/version")
    async def version() -> Response:
        return FastJSONResponse(svc.version)

    @router.get(V2 + "/pre-flight-checks")
    @svc.engine
    def pre_flight_checks() -> Response:
        return FastJSONResponse({"max_batch_size": int(svc.client.get_max_batch_size()),
                                 "supports_base64_encoding": True})

    @router.get(V2 + "/auth/identity")
    async def identity() -> Response:
        return FastJSONResponse({"user_id": "", "tenant": DEFAULT_TENANT, "databases": [DEFAULT_DATABASE]})

    @router.post(V2 + "/reset", summary="Delete every collection (only when the server allows reset)",
                 responses={403: {"model": m.ErrorResponse, "description": "reset is not allowed"}})
    @svc.engine
    def reset() -> Response:
        return FastJSONResponse(bool(svc.client.reset()))

    @router.post(V2 + "/tenants", openapi_extra=request_body(NamePayload))
    @svc.engine
    def create_tenant(body: NamePayload = svc.json_body(NamePayload)) -> Response:
        svc.create_tenant(body.name)
        return FastJSONResponse({})

    @router.get(V2 + "/tenants/{tenant}")
    @svc.engine
    def get_tenant(tenant: str) -> Response:
        return FastJSONResponse({"name": svc.get_tenant(tenant), "resource_name": None})

    @router.get(V2 + "/tenants/{tenant}/databases")
    @svc.engine
    def list_databases(tenant: str, limit: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
                       offset: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None) -> Response:
        names = svc.list_databases(tenant)[offset or 0:]
        if limit is not None:
            names = names[:limit]
        return FastJSONResponse([database_info(tenant, name) for name in names])

    @router.post(V2 + "/tenants/{tenant}/databases", openapi_extra=request_body(NamePayload))
    @svc.engine
    def create_database(tenant: str, body: NamePayload = svc.json_body(NamePayload)) -> Response:
        svc.create_database(tenant, body.name)
        return FastJSONResponse({})

    @router.get(V2 + "/tenants/{tenant}/databases/{database}")
    @svc.engine
    def get_database(tenant: str, database: str) -> Response:
        svc.namespace(tenant, database)
        return FastJSONResponse(database_info(tenant, database))

    @router.delete(V2 + "/tenants/{tenant}/databases/{database}",
                   summary="Delete a database and its collections (not the default one)")
    @svc.engine
    def delete_database(tenant: str, database: str) -> Response:
        svc.delete_database(tenant, database)
        return FastJSONResponse({})

    return router
