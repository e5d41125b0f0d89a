"""Seed API, index and storage maintenance: bulk-load batches, IVF rebuild, checkpoint."""
from __future__ import annotations

from fastapi import APIRouter

from vectordb.server import models as m
from vectordb.server.routes import answer, collection_route
from vectordb.server.service import Service


def maintenance_router(svc: Service) -> APIRouter:
    router = APIRouter()
    for action, endpoint, handler, response, summary in (
        # Logged batches: a server batch spans every client's writes, so each stays durable as it is
        # acknowledged; only index training waits for batch/end.
        ("batch/begin", "begin_batch", lambda n, _: answer(svc.collection(n).begin_batch(log_each_write=True)),
         m.OkResponse, "Defer index maintenance until batch/end (bulk loading)"),
        ("batch/end", "end_batch", lambda n, _: answer(svc.collection(n).end_batch(log_each_write=True)),
         m.OkResponse, None),
        ("rebuild", "rebuild", lambda n, _: answer({"ok": True, **svc.collection(n).rebuild()}), m.RebuildResponse,
         "Retrain the IVF index on the current data"),
        ("checkpoint", "checkpoint", lambda n, _: answer(svc.collection(n).checkpoint()), m.OkResponse,
         "Write a snapshot and truncate the write-ahead log"),
    ):
        collection_route(router, svc, "POST", action, endpoint, handler, response_model=response, tag="maintenance",
                         summary=summary)
    return router
