"""Seed API, records of a collection: add, upsert, update, query, get, delete."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from fastapi import APIRouter
from fastapi.responses import Response

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import ERRORS_COLLECTION, OK, CollectionName, request_body
from vectordb.server.service import Service, with_arrays, with_vectors


# The bodies of the hot routes, shared with the fast path (vectordb/server/fastpath.py).
# `framed`: the (field, array) of a binary frame's vectors, which only the fast path reads.
def add_records(svc: Service, name: str, body: m.RecordsRequest, method: str = "add",
                framed: Optional[Tuple[str, Any]] = None) -> Response:
    getattr(svc.collection(name), method)(**with_vectors(body.kwargs(), "embeddings", framed))
    return FastJSONResponse(OK)


def query_records(svc: Service, name: str, body: m.QueryRequest, framed: Optional[Tuple[str, Any]] = None) -> Response:
    kwargs = with_arrays(with_vectors(body.kwargs(), "query_embeddings", framed), "query_embedding")
    return FastJSONResponse(svc.collection(name).query(**kwargs))


def get_records(svc: Service, name: str, body: m.GetRequest) -> Response:
    return FastJSONResponse(svc.collection(name).get(**body.kwargs()))


def records_router(svc: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/collections/{name}/add", response_model=m.OkResponse, tags=["records"],
                 responses=ERRORS_COLLECTION,
              summary="Add records (ids already present are skipped)",
        openapi_extra=request_body(m.RecordsRequest),
    )
    @svc.engine
    def add(name: CollectionName, body: m.RecordsRequest = svc.json_body(m.RecordsRequest)) -> Response:
        return add_records(svc, name, body)

    @router.post("/collections/{name}/upsert", response_model=m.OkResponse, tags=["records"],
                 responses=ERRORS_COLLECTION,
              summary="Add new records, update existing ones (metadata merged)",
        openapi_extra=request_body(m.RecordsRequest),
    )
    @svc.engine
    def upsert(name: CollectionName, body: m.RecordsRequest = svc.json_body(m.RecordsRequest)) -> Response:
        return add_records(svc, name, body, "upsert")

    @router.put("/collections/{name}/update", response_model=m.OkResponse, tags=["records"],
                 responses=ERRORS_COLLECTION,
             summary="Update existing records (unknown ids are ignored; metadata merged)",
        openapi_extra=request_body(m.RecordsRequest),
    )
    @svc.engine
    def update(name: CollectionName, body: m.RecordsRequest = svc.json_body(m.RecordsRequest)) -> Response:
        return add_records(svc, name, body, "update")

    @router.post("/collections/{name}/query", response_model=m.QueryResponse, tags=["records"],
                 responses=ERRORS_COLLECTION,
              summary="Nearest neighbours: one result list per query, ascending distance",
        openapi_extra=request_body(m.QueryRequest),
    )
    @svc.engine
    def query(name: CollectionName, body: m.QueryRequest = svc.json_body(m.QueryRequest)) -> Response:
        return query_records(svc, name, body)

    @router.post("/collections/{name}/get", response_model=m.GetResponse, tags=["records"],
                 responses=ERRORS_COLLECTION,
              summary="Records by id and/or filter",
        openapi_extra=request_body(m.GetRequest),
    )
    @svc.engine
    def get(name: CollectionName, body: m.GetRequest = svc.json_body(m.GetRequest)) -> Response:
        return get_records(svc, name, body)

    def _delete(name: str, body: m.DeleteRequest) -> Response:
        result = svc.collection(name).delete(**body.kwargs())
        deleted = result.get("deleted") if isinstance(result, dict) else None
        return FastJSONResponse({"deleted": int(deleted or 0)})

    @router.delete("/collections/{name}/delete", response_model=m.DeletedResponse, tags=["records"],
                responses=ERRORS_COLLECTION, summary="Delete records by id and/or filter (JSON body)",
        openapi_extra=request_body(m.DeleteRequest),
    )
    @svc.engine
    def delete_records(name: CollectionName, body: m.DeleteRequest = svc.json_body(m.DeleteRequest)) -> Response:
        return _delete(name, body)

    @router.post("/collections/{name}/delete", response_model=m.DeletedResponse, tags=["records"],
              responses=ERRORS_COLLECTION, summary="Same as DELETE, for clients that cannot send a body with DELETE",
        openapi_extra=request_body(m.DeleteRequest),
    )
    @svc.engine
    def delete_records_post(name: CollectionName, body: m.DeleteRequest = svc.json_body(m.DeleteRequest)) -> Response:
        return _delete(name, body)

    return router
