"""Seed API, collections by name: create, list, get, modify, delete, count, stats, peek."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from fastapi import APIRouter, Query
from fastapi.responses import Response
from typing_extensions import Annotated

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import ERRORS_COLLECTION, ERRORS_CREATE, ERRORS_MODIFY, OK, CollectionName, request_body
from vectordb.server.service import Service, collection_info
from vectordb.validation import MAX_COUNT


def collections_router(svc: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/collections", response_model=m.CollectionInfo, tags=["collections"], responses=ERRORS_CREATE,
        openapi_extra=request_body(m.CreateCollectionRequest),
    )
    @svc.engine
    def create_collection(body: m.CreateCollectionRequest = svc.json_body(m.CreateCollectionRequest)) -> Response:
        kwargs = body.kwargs()
        col = svc.create_collection(kwargs.pop("name"), **kwargs)
        return FastJSONResponse(collection_info(col))

    @router.get("/collections", response_model=List[m.CollectionInfo], tags=["collections"],
             responses={422: ERRORS_COLLECTION[422]})
    @svc.engine
    def list_collections(
        limit: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
        offset: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
    ) -> Response:
        cols = svc.list_collections(limit=limit, offset=offset)
        return FastJSONResponse([collection_info(c) for c in cols])

    @router.get("/collections/{name}", response_model=m.CollectionInfo, tags=["collections"],
                responses=ERRORS_COLLECTION)
    @svc.engine
    def get_collection(name: CollectionName) -> Response:
        return FastJSONResponse(collection_info(svc.collection(name)))

    @router.patch(
        "/collections/{name}",
        response_model=m.CollectionInfo,
        tags=["collections"],
        summary="Rename, replace the metadata and/or set the default n_probe",
        responses=ERRORS_MODIFY,
        openapi_extra=request_body(m.ModifyCollectionRequest),
    )
    @svc.engine
    def modify_collection(name: CollectionName,
                          body: m.ModifyCollectionRequest = svc.json_body(m.ModifyCollectionRequest)) -> Response:
        col = svc.collection(name)
        col.modify(**body.kwargs())
        return FastJSONResponse(collection_info(col))

    @router.delete("/collections/{name}", response_model=m.OkResponse, tags=["collections"],
                responses=ERRORS_COLLECTION)
    @svc.engine
    def delete_collection(name: CollectionName) -> Response:
        svc.delete_collection(name)
        return FastJSONResponse(OK)

    @router.get("/collections/{name}/count", response_model=m.CountResponse, tags=["collections"],
                responses=ERRORS_COLLECTION)
    @svc.engine
    def count(name: CollectionName) -> Response:
        return FastJSONResponse({"count": int(svc.collection(name).count())})

    @router.get("/collections/{name}/stats", response_model=Dict[str, Any], tags=["collections"],
                responses=ERRORS_COLLECTION)
    @svc.engine
    def stats(name: CollectionName) -> Response:
        return FastJSONResponse(svc.collection(name).stats())

    @router.get("/collections/{name}/peek", response_model=m.GetResponse, tags=["records"], responses=ERRORS_COLLECTION,
             summary="The first records, with embeddings, metadatas and documents")
    @svc.engine
    def peek(name: CollectionName, limit: Annotated[int, Query()] = 10) -> Response:
        return FastJSONResponse(svc.collection(name).peek(limit=limit))

    return router
