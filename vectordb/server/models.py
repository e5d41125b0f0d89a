"""Request and response bodies of the REST API (Pydantic models; they drive /docs and /openapi.json).

Input shapes mirror the Python API: a single id, vector, document or metadata dict is accepted
where a list is, exactly as `Collection.add` accepts them. Numbers are strict (no "1.5" strings,
no booleans as numbers) and finite: NaN and Infinity are rejected here as well as by the JSON
parser. Unknown fields are an error, so a typo ("n_result") is reported instead of ignored.
"""
from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr

from ..validation import MAX_COUNT, MAX_DIMENSION


def _integral_float_to_int(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; accept it, but not 5.5, "5" or true.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PositiveInt = Annotated[StrictInt, Field(ge=1), BeforeValidator(_integral_float_to_int)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0), BeforeValidator(_integral_float_to_int)]
# n_results, limit, offset: the embedded client's limits (vectordb.validation.MAX_COUNT).
Count = Annotated[StrictInt, Field(ge=1, le=MAX_COUNT), BeforeValidator(_integral_float_to_int)]
Offset = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT), BeforeValidator(_integral_float_to_int)]
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$"
CollectionNameField = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Embedding = List[FiniteFloat]
# One vector (flat list) or many (list of lists), as Collection.add accepts.
Embeddings = Union[List[Embedding], Embedding]
MetadataScalar = Union[StrictBool, StrictInt, FiniteFloat, StrictStr]
MetadataValue = Union[MetadataScalar, List[MetadataScalar]]
# None as a value deletes the key in update/upsert.
Metadata = Dict[str, Optional[MetadataValue]]
Ids = Union[StrictStr, List[StrictStr]]
IncludeItem = Literal["documents", "embeddings", "metadatas", "distances", "uris", "data"]
Where = Dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def kwargs(self) -> Dict[str, Any]:
        """The fields that were given (not None), for the Collection method of the same name."""
        out: Dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class CreateCollectionRequest(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "images", "dimension": 1280, "use_ivf": True, "n_clusters": 100}]},
    )
    name: CollectionNameField = Field(
        description="3-512 characters of [a-zA-Z0-9._-], starting and ending alphanumeric, no '..', not an IPv4 address"
    )
    dimension: Optional[PositiveInt] = Field(
        None, le=MAX_DIMENSION,
        description=f"vector dimension (1 to {MAX_DIMENSION}); fixed by the first add if omitted")
    use_ivf: StrictBool = Field(False, description="build an IVF index (approximate search) instead of exact search")
    n_clusters: Optional[PositiveInt] = Field(None, description="IVF lists")
    n_probe: Optional[PositiveInt] = Field(None, description="IVF lists searched per query by default")
    quantization: Optional[Literal["sq8", "pq4"]] = Field(
        None, description='"sq8": scan 8-bit codes, then re-rank exactly in float32 (same results); "pq4" (IVF '
                          'collections): scan 4-bit PQ fast-scan codes, re-rank in float32 (measured recall); '
                          'null: float32 only')
    metadata: Optional[Dict[str, MetadataValue]] = Field(
        None, description='collection metadata; {"hnsw:space": "l2" | "ip" | "cosine"} chooses the distance'
    )
    configuration: Optional[Dict[str, Any]] = Field(None, description='e.g. {"hnsw": {"space": "cosine"}}')
    get_or_create: StrictBool = Field(False, description="return the existing collection instead of failing with 409")


class ModifyCollectionRequest(_Body):
    name: Optional[CollectionNameField] = Field(None, description="new name (same rules as at creation)")
    metadata: Optional[Dict[str, MetadataValue]] = Field(None, description="new metadata (replaces the old whole)")
    configuration: Optional[Dict[str, Any]] = Field(
        None, description='{"n_probe": N}: lists a query scans when it gives none (null: the default rule)')


class RecordsRequest(_Body):
    """add / upsert / update: one entry per id in each list given."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ids": ["id1", "id2"],
                    "embeddings": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
                    "metadatas": [{"key": "value"}, {"source": "camera"}],
                    "documents": ["first", "second"],
                }
            ]
        },
    )
    ids: Ids
    embeddings: Optional[Embeddings] = None
    embeddings_base64: Optional[List[StrictStr]] = Field(
        None, description="instead of embeddings: one base64 string of little-endian float32 per vector")
    metadatas: Optional[Union[List[Optional[Metadata]], Metadata]] = None
    documents: Optional[Union[List[Optional[StrictStr]], StrictStr]] = None
    uris: Optional[Union[List[Optional[StrictStr]], StrictStr]] = None


class QueryRequest(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query_embedding": [0.1, 0.2, 0.3], "n_results": 10, "where": {"source": "camera"}}]
        },
    )
    query_embedding: Optional[Embedding] = Field(
        None, description="one query vector (results still have one list per query)"
    )
    query_embeddings: Optional[Embeddings] = Field(None, description="many query vectors")
    query_embeddings_base64: Optional[List[StrictStr]] = Field(
        None, description="instead of query_embeddings: one base64 string of little-endian float32 per vector")
    query_texts: Optional[Union[List[StrictStr], StrictStr]] = Field(
        None, description="texts; needs an embedding function, which the server has not (embed on the client)"
    )
    ids: Optional[Ids] = Field(None, description="search only these records")
    n_results: Count = 10
    where: Optional[Where] = Field(
        None, description='metadata filter, e.g. {"source": "camera"} or {"year": {"$gte": 2020}}'
    )
    where_document: Optional[Where] = Field(None, description='document filter, e.g. {"$contains": "cat"}')
    include: Optional[List[IncludeItem]] = Field(None, description='default ["metadatas", "documents", "distances"]')
    n_probe: Optional[PositiveInt] = Field(None, description="IVF lists to search (overrides the collection default)")


class GetRequest(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"ids": ["id1", "id2"], "include": ["embeddings", "metadatas"]}]},
    )
    ids: Optional[Ids] = None
    where: Optional[Where] = None
    limit: Optional[Offset] = None
    offset: Optional[Offset] = None
    where_document: Optional[Where] = None
    include: Optional[List[IncludeItem]] = Field(None, description='default ["metadatas", "documents"]')


class DeleteRequest(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["id1", "id2"]}]})
    ids: Optional[Ids] = None
    where: Optional[Where] = None
    where_document: Optional[Where] = None


# ---- responses (documentation only: endpoints return pre-rendered JSON) ----


class ErrorResponse(BaseModel):
    error: str = Field(description="error class, e.g. NotFoundError, CollectionExistsError, InvalidArgumentError")
    message: str = Field(description="what was wrong and what was expected")
    detail: Optional[List[Dict[str, Any]]] = Field(None, description="per-field validation errors (422)")


class HealthResponse(BaseModel):
    status: str
    version: str


class VersionResponse(BaseModel):
    version: str


class HeartbeatResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    nanosecond_heartbeat: int = Field(alias="nanosecond heartbeat")


class MaxBatchSizeResponse(BaseModel):
    max_batch_size: int


class CountResponse(BaseModel):
    count: int


class OkResponse(BaseModel):
    ok: bool


class RebuildResponse(BaseModel):
    ok: bool
    index: str
    n_clusters: int
    message: str


class DeletedResponse(BaseModel):
    deleted: int


class CollectionInfo(BaseModel):
    name: str
    id: str
    metadata: Optional[Dict[str, Any]] = None
    configuration: Optional[Dict[str, Any]] = None
    dimension: Optional[int] = None


class GetResponse(BaseModel):
    ids: List[str]
    embeddings: Optional[List[List[float]]] = None
    documents: Optional[List[Optional[str]]] = None
    uris: Optional[List[Optional[str]]] = None
    data: Optional[List[Any]] = None
    metadatas: Optional[List[Optional[Dict[str, Any]]]] = None
    included: List[str]


class QueryResponse(BaseModel):
    ids: List[List[str]]
    embeddings: Optional[List[List[List[float]]]] = None
    documents: Optional[List[List[Optional[str]]]] = None
    uris: Optional[List[List[Optional[str]]]] = None
    data: Optional[List[Any]] = None
    metadatas: Optional[List[List[Optional[Dict[str, Any]]]]] = None
    distances: Optional[List[List[float]]] = None
    included: List[str]
