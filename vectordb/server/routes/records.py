"""Seed API, records of a collection: add, upsert, update, query, get, delete."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from fastapi import APIRouter
from fastapi.responses import Response

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import OK, collection_route
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


def delete_records(svc: Service, name: str, body: m.DeleteRequest) -> Response:
    result = svc.collection(name).delete(**body.kwargs())
    deleted = result.get("deleted") if isinstance(result, dict) else None
    return FastJSONResponse({"deleted": int(deleted or 0)})


def records_router(svc: Service) -> APIRouter:
    router = APIRouter()
    for method, action, endpoint, handler, body, response, summary in (
        ("POST", "add", "add", lambda n, b: add_records(svc, n, b), m.RecordsRequest, m.OkResponse,
         "Add records (ids already present are skipped)"),
        ("POST", "upsert", "upsert", lambda n, b: add_records(svc, n, b, "upsert"), m.RecordsRequest, m.OkResponse,
         "Add new records, update existing ones (metadata merged)"),
        ("PUT", "update", "update", lambda n, b: add_records(svc, n, b, "update"), m.RecordsRequest, m.OkResponse,
         "Update existing records (unknown ids are ignored; metadata merged)"),
        ("POST", "query", "query", lambda n, b: query_records(svc, n, b), m.QueryRequest, m.QueryResponse,
         "Nearest neighbours: one result list per query, ascending distance"),
        ("POST", "get", "get", lambda n, b: get_records(svc, n, b), m.GetRequest, m.GetResponse,
         "Records by id and/or filter"),
        ("DELETE", "delete", "delete_records", lambda n, b: delete_records(svc, n, b), m.DeleteRequest,
         m.DeletedResponse, "Delete records by id and/or filter (JSON body)"),
        ("POST", "delete", "delete_records_post", lambda n, b: delete_records(svc, n, b), m.DeleteRequest,
         m.DeletedResponse, "Same as DELETE, for clients that cannot send a body with DELETE"),
    ):
        collection_route(router, svc, method, action, endpoint, handler, body=body, response_model=response,
                         tag="records", summary=summary)
    return router
