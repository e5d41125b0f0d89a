"""chroma's /api/v2, collections of a tenant's database (by name or id) and their records:
create, list, count, get, modify, delete; add, upsert, update, get, delete, count, query."""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional

from fastapi import APIRouter, Query
from fastapi.responses import Response
from typing_extensions import Annotated

from vectordb.errors import InvalidArgumentError, NotFoundError
from vectordb.server import chroma_models as cm
from vectordb.server.chroma_models import decode_embeddings
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import request_body
from vectordb.server.routes.chroma_system import ERRORS, TAGS, V2
from vectordb.server.service import Namespace, Service
from vectordb.validation import MAX_COUNT

DB = V2 + "/tenants/{tenant}/databases/{database}"
_GET_INCLUDE = ["documents", "metadatas"]
_QUERY_INCLUDE = ["documents", "metadatas", "distances"]
_RESULT_FIELDS = ("ids", "embeddings", "documents", "uris", "metadatas")


def collection_model(col: Any, ns: Namespace) -> Dict[str, Any]:
    """A collection as chroma's server describes it (HNSW settings are chroma's defaults, for show)."""
    configuration = col.configuration
    dimension = configuration.get("dimension")
    return {
        "id": str(col.id),
        "name": ns.local_name(col.name),
        "configuration_json": {
            "hnsw": {"space": configuration.get("space", "l2"), "ef_construction": 100, "ef_search": 100,
                     "max_neighbors": 16, "resize_factor": 1.2, "sync_threshold": 1000},
            "spann": None,
            # As chroma's server: the client's embedding function as it sent it (JSON), for its get_collection.
            "embedding_function": col.configuration_json.get("embedding_function"),
        },
        "schema": None,
        "metadata": col.metadata,
        "dimension": dimension if isinstance(dimension, int) and dimension > 0 else None,
        "tenant": ns.tenant,
        "database": ns.database,
        "log_position": 0,
        "version": 0,
    }


def _persisted_configuration(configuration: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """What a create or modify body's configuration changes here: the HNSW parameters (kept and
    reported) and the client's embedding function in its JSON form (persisted, as chroma's server does)."""
    out = {key: (configuration or {}).get(key) for key in ("hnsw", "embedding_function")}
    out = {key: value for key, value in out.items() if isinstance(value, dict)}
    return out or None


def _uuid(collection_id: str) -> str:
    try:
        return str(uuid.UUID(collection_id))
    except ValueError:
        raise InvalidArgumentError(f"Collection ID [{collection_id}] is not a valid UUID") from None


def _given(**kwargs: Any) -> Dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def by_id(svc: Service, tenant: str, database: str, collection_id: str) -> Any:
    return svc.collection_by_id(_uuid(collection_id), svc.namespace(tenant, database))


# The bodies of the hot record routes, shared with the fast path (vectordb/server/fastpath.py).
def write_records(svc: Service, tenant: str, database: str, collection_id: str, body: cm.RecordsPayload,
                  method: str) -> Response:
    col = by_id(svc, tenant, database, collection_id)
    kwargs = _given(embeddings=decode_embeddings(body.embeddings), metadatas=body.metadatas,
                    documents=body.documents, uris=body.uris)
    getattr(col, method)(ids=body.ids, **kwargs)
    return FastJSONResponse({}, status_code=201 if method == "add" else 200)


def get_records(svc: Service, tenant: str, database: str, collection_id: str, body: cm.GetPayload) -> Response:
    col = by_id(svc, tenant, database, collection_id)
    include = _server_include(body.include, _GET_INCLUDE)
    result = col.get(**_given(ids=body.ids, where=body.where, where_document=body.where_document,
                              limit=body.limit, offset=body.offset), include=include)
    return FastJSONResponse(_result(result, include, ()))


def query_records(svc: Service, tenant: str, database: str, collection_id: str, body: cm.QueryPayload) -> Response:
    col = by_id(svc, tenant, database, collection_id)
    include = _server_include(body.include, _QUERY_INCLUDE)
    embeddings = decode_embeddings(body.query_embeddings, "query_embeddings")
    if body.n_results == 0:  # chroma answers an empty result per query; our query refuses 0
        n = len(embeddings)
        return FastJSONResponse(_result({f: [[] for _ in range(n)] for f in _RESULT_FIELDS + ("distances",)},
                                        include, ("distances",)))
    result = col.query(query_embeddings=embeddings, include=include,
                       **_given(n_results=body.n_results, ids=body.ids, where=body.where,
                                where_document=body.where_document))
    return FastJSONResponse(_result(result, include, ("distances",)))


def chroma_collections_router(svc: Service) -> APIRouter:
    router = APIRouter(tags=list(TAGS), responses=ERRORS)

    def name_or_id(ns: Namespace, key: str) -> Any:
        """chromadb's client addresses GET and DELETE by name, PUT by id: accept either."""
        try:
            return svc.collection(key, ns)
        except NotFoundError:
            try:
                canonical = str(uuid.UUID(key))
            except ValueError:
                raise NotFoundError(f"Collection [{key}] does not exist") from None
            try:
                return svc.collection_by_id(canonical, ns)
            except NotFoundError:
                raise NotFoundError(f"Collection [{key}] does not exist") from None

    # ---- collections

    @router.get(DB + "/collections")
    @svc.engine
    def list_collections(tenant: str, database: str, limit: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
                         offset: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None) -> Response:
        ns = svc.namespace(tenant, database)
        cols = svc.list_collections(limit=limit, offset=offset, ns=ns)
        return FastJSONResponse([collection_model(c, ns) for c in cols])

    @router.get(DB + "/collections_count")
    @svc.engine
    def count_collections(tenant: str, database: str) -> Response:
        return FastJSONResponse(svc.count_collections(svc.namespace(tenant, database)))

    @router.post(DB + "/collections", openapi_extra=request_body(cm.CreateCollectionPayload))
    @svc.engine
    def create_collection(tenant: str, database: str,
                          body: cm.CreateCollectionPayload = svc.json_body(cm.CreateCollectionPayload)) -> Response:
        ns = svc.namespace(tenant, database)
        configuration = _persisted_configuration(body.configuration)
        col = svc.create_collection(body.name, ns, metadata=body.metadata, configuration=configuration,
                                    get_or_create=body.get_or_create)
        return FastJSONResponse(collection_model(col, ns))

    @router.get(DB + "/collections/by-id/{collection_id}")
    @svc.engine
    def get_collection_by_id(tenant: str, database: str, collection_id: str) -> Response:
        ns = svc.namespace(tenant, database)
        return FastJSONResponse(collection_model(svc.collection_by_id(_uuid(collection_id), ns), ns))

    @router.get(DB + "/collections/{collection_id}", summary="A collection by name (or id)")
    @svc.engine
    def get_collection(tenant: str, database: str, collection_id: str) -> Response:
        ns = svc.namespace(tenant, database)
        return FastJSONResponse(collection_model(name_or_id(ns, collection_id), ns))

    @router.put(DB + "/collections/{collection_id}", summary="Rename and/or replace the metadata",
                openapi_extra=request_body(cm.UpdateCollectionPayload))
    @svc.engine
    def update_collection(tenant: str, database: str, collection_id: str,
                          body: cm.UpdateCollectionPayload = svc.json_body(cm.UpdateCollectionPayload)) -> Response:
        ns = svc.namespace(tenant, database)
        col = name_or_id(ns, collection_id)
        col.modify(**_given(name=ns.catalog_name(body.new_name) if body.new_name is not None else None,
                            metadata=body.new_metadata, configuration=_persisted_configuration(body.new_configuration)))
        return FastJSONResponse({})

    @router.delete(DB + "/collections/{collection_id}", summary="Delete a collection by name (or id)")
    @svc.engine
    def delete_collection(tenant: str, database: str, collection_id: str) -> Response:
        ns = svc.namespace(tenant, database)
        col = name_or_id(ns, collection_id)
        svc.client.delete_collection(col.name)
        return FastJSONResponse({})

    # ---- records (the hot ones are module functions, shared with the fast path)

    @router.post(DB + "/collections/{collection_id}/add", status_code=201,
                 openapi_extra=request_body(cm.RecordsPayload))
    @svc.engine
    def add(tenant: str, database: str, collection_id: str,
            body: cm.RecordsPayload = svc.json_body(cm.RecordsPayload)) -> Response:
        return write_records(svc, tenant, database, collection_id, body, "add")

    @router.post(DB + "/collections/{collection_id}/upsert", openapi_extra=request_body(cm.RecordsPayload))
    @svc.engine
    def upsert(tenant: str, database: str, collection_id: str,
               body: cm.RecordsPayload = svc.json_body(cm.RecordsPayload)) -> Response:
        return write_records(svc, tenant, database, collection_id, body, "upsert")

    @router.post(DB + "/collections/{collection_id}/update", openapi_extra=request_body(cm.RecordsPayload))
    @svc.engine
    def update(tenant: str, database: str, collection_id: str,
               body: cm.RecordsPayload = svc.json_body(cm.RecordsPayload)) -> Response:
        return write_records(svc, tenant, database, collection_id, body, "update")

    @router.get(DB + "/collections/{collection_id}/count")
    @svc.engine
    def count(tenant: str, database: str, collection_id: str) -> Response:
        return FastJSONResponse(int(by_id(svc, tenant, database, collection_id).count()))

    @router.post(DB + "/collections/{collection_id}/get", openapi_extra=request_body(cm.GetPayload))
    @svc.engine
    def get(tenant: str, database: str, collection_id: str,
            body: cm.GetPayload = svc.json_body(cm.GetPayload)) -> Response:
        return get_records(svc, tenant, database, collection_id, body)

    @router.post(DB + "/collections/{collection_id}/query", openapi_extra=request_body(cm.QueryPayload))
    @svc.engine
    def query(tenant: str, database: str, collection_id: str,
              body: cm.QueryPayload = svc.json_body(cm.QueryPayload)) -> Response:
        return query_records(svc, tenant, database, collection_id, body)

    @router.post(DB + "/collections/{collection_id}/delete", openapi_extra=request_body(cm.DeletePayload))
    @svc.engine
    def delete(tenant: str, database: str, collection_id: str,
               body: cm.DeletePayload = svc.json_body(cm.DeletePayload)) -> Response:
        col = by_id(svc, tenant, database, collection_id)
        result = col.delete(**_given(ids=body.ids, where=body.where, where_document=body.where_document,
                                     limit=body.limit))
        return FastJSONResponse({"deleted": int(result.get("deleted", 0))})

    return router


def _server_include(include: Optional[List[str]], default: List[str]) -> List[str]:
    # "data" is filled in by chromadb's client (from uris), never by the server.
    return list(default) if include is None else [item for item in include if item != "data"]


def _result(result: Dict[str, Any], include: List[str], extra: tuple) -> Dict[str, Any]:
    out = {"ids": result["ids"]}
    for field in _RESULT_FIELDS[1:] + extra:
        out[field] = result.get(field) if field in include else None
    out["include"] = include
    return out
