"""The service layer both HTTP APIs share: one embedded client, the engine thread pool, request bodies.

Routers (the seed's paths in routes/, chroma's /api/v2 in routes/chroma_*) only translate HTTP to
calls here and results back to JSON; every engine call runs on the pool, never on the event loop.

    service = Service(client, settings, version)
    col = service.collection("images")              # NotFoundError if absent
"""
from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from fastapi import Depends, Request

from vectordb.server.jsonio import body_error, is_json, parse_body
from vectordb.server.settings import ServerSettings

# Bodies at least this large are parsed and validated on the engine pool instead of the event loop
# (a 10k x 128 add takes ~0.3 s to parse and validate; a one-vector query ~10 us).
PARSE_IN_THREAD_BYTES = 64 * 1024
# Body models documented by hand (see Service.json_body): added to components/schemas by openapi.py.
BODY_MODELS: set = set()


def as_array(vectors: Any) -> Any:
    """Validated vectors (lists of Python floats) -> one float64 array, ~5x faster for the engine
    layer to check than nested lists. float64 keeps its range checks exact. Empty or ragged input
    is passed on as is, so the Collection reports it in its own words."""
    if not vectors or isinstance(vectors, np.ndarray):
        return vectors
    try:
        return np.array(vectors, dtype=np.float64)
    except ValueError:
        return vectors


def with_arrays(kwargs: Dict[str, Any], *names: str) -> Dict[str, Any]:
    for name in names:
        if name in kwargs:
            kwargs[name] = as_array(kwargs[name])
    return kwargs


def client_path(client: Any) -> str:
    for attr in ("path", "_path"):
        value = getattr(client, attr, None)
        if value:
            return os.fspath(value)
    return "(in memory)"


class Service:
    """One embedded client behind the HTTP APIs, and the pool its calls run on."""

    def __init__(self, client: Any, settings: ServerSettings, version: str) -> None:
        self.client = client
        self.settings = settings
        self.version = version
        # Created on first use and shut down at the end of each lifespan (the app may be started again).
        self._pools: List[ThreadPoolExecutor] = []

    # ---- the engine pool

    def pool(self) -> ThreadPoolExecutor:
        if not self._pools:
            self._pools.append(ThreadPoolExecutor(max_workers=self.settings.threads,
                                                  thread_name_prefix="vectordb-engine"))
        return self._pools[0]

    def shutdown(self) -> None:
        """Waits for the calls still running in the engine, then drops the pool."""
        while self._pools:
            self._pools.pop().shutdown(wait=True)

    def engine(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the endpoint body runs on the engine pool.

        A plain executor hop costs less than FastAPI's `def`-endpoint path (anyio to_thread), which
        matters for ~50 us queries."""

        @functools.wraps(fn)  # FastAPI reads the parameters through __wrapped__
        async def in_pool(*args: Any, **kwargs: Any) -> Any:
            call = functools.partial(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self.pool(), call)

        return in_pool

    def json_body(self, model: type) -> Any:
        """Depends(): the body parsed strictly and validated off the loop when it is large.

        FastAPI's own body handling would validate on the event loop (and its JSON parser accepts
        NaN); the schema is still documented through openapi_extra and BODY_MODELS."""
        BODY_MODELS.add(model)

        async def dependency(request: Request) -> Any:
            if not is_json(request.headers.get("content-type", "")):
                raise body_error(("body",), "content_type",
                                 "expected a JSON body: send the header Content-Type: application/json")
            raw = await request.body()
            if len(raw) < PARSE_IN_THREAD_BYTES:
                return parse_body(model, raw)
            return await asyncio.get_running_loop().run_in_executor(self.pool(), parse_body, model, raw)

        return Depends(dependency)

    # ---- collections

    # The server never embeds (as chroma's): clients send embeddings, made by their embedding function.
    def collection(self, name: str) -> Any:
        return self.client.get_collection(name, embedding_function=None)

    def create_collection(self, name: str, **kwargs: Any) -> Any:
        return self.client.create_collection(name, embedding_function=None, **kwargs)

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> List[Any]:
        return list(self.client.list_collections(limit=limit, offset=offset))

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)


def collection_info(col: Any) -> Dict[str, Any]:
    """The seed API's description of a collection."""
    info: Dict[str, Any] = {"name": col.name, "id": str(col.id), "metadata": col.metadata}
    configuration = getattr(col, "configuration", None)
    if isinstance(configuration, dict):
        info["configuration"] = configuration
    dimension = getattr(col, "dimension", None)
    if isinstance(dimension, int) and not isinstance(dimension, bool):
        info["dimension"] = dimension
    return info
