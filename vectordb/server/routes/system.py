"""Seed API, the server itself: health, version, heartbeat, limits, collection count, reset."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from vectordb.server import models as m
from vectordb.server.jsonio import FastJSONResponse
from vectordb.server.routes import OK
from vectordb.server.service import Service


def system_router(svc: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=m.HealthResponse, tags=["service"],
                summary="Liveness probe (no API key needed)")
    async def health() -> Response:  # no engine call: answered on the loop, no thread hop
        return FastJSONResponse({"status": "ok", "version": svc.version})

    @router.get("/version", response_model=m.VersionResponse, tags=["service"])
    @svc.engine
    def get_version() -> Response:
        return FastJSONResponse({"version": str(svc.client.get_version())})

    @router.get("/heartbeat", response_model=m.HeartbeatResponse, tags=["service"],
                summary="Server time in nanoseconds")
    @svc.engine
    def heartbeat() -> Response:
        return FastJSONResponse({"nanosecond heartbeat": int(svc.client.heartbeat())})

    @router.get("/max_batch_size", response_model=m.MaxBatchSizeResponse, tags=["service"])
    @svc.engine
    def max_batch_size() -> Response:
        return FastJSONResponse({"max_batch_size": int(svc.client.get_max_batch_size())})

    @router.get("/collections_count", response_model=m.CountResponse, tags=["service"],
                summary="Number of collections")
    @svc.engine
    def count_collections() -> Response:
        return FastJSONResponse({"count": int(svc.client.count_collections())})

    @router.post(
        "/reset",
        response_model=m.OkResponse,
        tags=["service"],
        summary="Delete every collection (only when the server allows reset)",
        responses={403: {"model": m.ErrorResponse, "description": "reset is not allowed"}},
    )
    @svc.engine
    def reset() -> Response:
        svc.client.reset()
        return FastJSONResponse(OK)

    return router
