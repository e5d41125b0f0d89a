"""Seed API, index and storage maintenance: bulk-load batches, IVF rebuild, checkpoint."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import ERRORS_COLLECTION, OK, CollectionName
from vectordb.server.service import Service


def maintenance_router(svc: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/collections/{name}/batch/begin", response_model=m.OkResponse, tags=["maintenance"],
              responses=ERRORS_COLLECTION, summary="Defer index maintenance until batch/end (bulk loading)")
    @svc.engine
    def begin_batch(name: CollectionName) -> Response:
        svc.collection(name).begin_batch()
        return FastJSONResponse(OK)

    @router.post("/collections/{name}/batch/end", response_model=m.OkResponse, tags=["maintenance"],
              responses=ERRORS_COLLECTION)
    @svc.engine
    def end_batch(name: CollectionName) -> Response:
        svc.collection(name).end_batch()
        return FastJSONResponse(OK)

    @router.post("/collections/{name}/rebuild", response_model=m.RebuildResponse, tags=["maintenance"],
              responses=ERRORS_COLLECTION, summary="Retrain the IVF index on the current data")
    @svc.engine
    def rebuild(name: CollectionName) -> Response:
        return FastJSONResponse({"ok": True, **svc.collection(name).rebuild()})

    @router.post("/collections/{name}/checkpoint", response_model=m.OkResponse, tags=["maintenance"],
              responses=ERRORS_COLLECTION, summary="Write a snapshot and truncate the write-ahead log")
    @svc.engine
    def checkpoint(name: CollectionName) -> Response:
        svc.collection(name).checkpoint()
        return FastJSONResponse(OK)

    return router
