"""Request bodies of chroma's /api/v2 (as chromadb's HttpClient sends them) and their conversion.

Fields are checked for their JSON type here; values (names, metadata, filters, include) are checked
by the Collection methods they go to, as for the embedded client. Unknown fields are ignored, as
chroma's server ignores them. Embeddings arrive as lists of numbers or as base64 strings of
little-endian float32 (chromadb's client sends the latter when pre-flight-checks says so).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from vectordb.errors import InvalidArgumentError
from vectordb.server.jsonio import decode_base64_vectors


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


Metadatas = Optional[List[Optional[Dict[str, Any]]]]
Texts = Optional[List[Optional[StrictStr]]]
Where = Optional[Dict[str, Any]]
NonNegative = Optional[StrictInt]


class NamePayload(_Body):
    """create tenant / create database."""

    name: Any = Field(description="3-63 characters of [a-zA-Z0-9_-]")


class CreateCollectionPayload(_Body):
    name: Any
    metadata: Optional[Dict[str, Any]] = None
    configuration: Optional[Dict[str, Any]] = Field(None, description='{"hnsw": {"space": "l2" | "ip" | "cosine"}}')
    get_or_create: StrictBool = False


class UpdateCollectionPayload(_Body):
    new_name: Optional[Any] = None
    new_metadata: Optional[Dict[str, Any]] = None
    new_configuration: Optional[Dict[str, Any]] = Field(
        None, description="hnsw parameters (kept, no effect here) and the embedding function (JSON form, persisted)")


class RecordsPayload(_Body):
    """add / upsert / update."""

    ids: List[StrictStr]
    embeddings: Optional[List[Any]] = Field(None, description="lists of numbers, or base64 little-endian float32")
    metadatas: Metadatas = None
    documents: Texts = None
    uris: Texts = None


class GetPayload(_Body):
    ids: Optional[List[StrictStr]] = None
    where: Where = None
    where_document: Where = None
    limit: NonNegative = None
    offset: NonNegative = None
    include: Optional[List[StrictStr]] = None


class QueryPayload(_Body):
    query_embeddings: List[Any]
    ids: Optional[List[StrictStr]] = None
    n_results: NonNegative = None
    where: Where = None
    where_document: Where = None
    include: Optional[List[StrictStr]] = None


class DeletePayload(_Body):
    ids: Optional[List[StrictStr]] = None
    where: Where = None
    where_document: Where = None
    limit: NonNegative = None


def decode_embeddings(items: Optional[List[Any]], field: str = "embeddings") -> Any:
    """Embeddings from a request: one float32 array for base64 strings, one float64 array for lists of
    numbers (exact range checks later), or the list as given when ragged (the Collection names the problem)."""
    if items is None or not items:
        return items
    if all(isinstance(item, str) for item in items):
        return decode_base64_vectors(items, field)
    for i, item in enumerate(items):
        if not isinstance(item, list):
            raise InvalidArgumentError(
                f"{field}[{i}] is {type(item).__name__}: expected a list of numbers or a base64 string")
    try:
        array = np.array(items)
    except ValueError:
        return items  # ragged
    if array.dtype.kind not in "fiu" or array.ndim != 2:
        raise InvalidArgumentError(f"{field} must hold lists of numbers")
    return array.astype(np.float64, copy=False)
