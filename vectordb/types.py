"""chromadb's type names (chromadb.api.types) for annotations in code written against chromadb:
`from vectordb import Documents, Embeddings, Metadata, QueryResult, GetResult, ...`."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, TypedDict, Union

import numpy as np
from numpy.typing import NDArray

ID = str
IDs = List[ID]
Document = str
Documents = List[Document]
URI = str
URIs = List[URI]
Image = NDArray[Any]
Images = List[Image]
Embedding = Union[Sequence[float], Sequence[int], NDArray[Union[np.float32, np.float64, np.int32, np.int64]]]
Embeddings = List[Embedding]
PyEmbedding = Sequence[float]
PyEmbeddings = List[PyEmbedding]

MetadataValue = Union[str, int, float, bool, None, List[str], List[int], List[float], List[bool]]
Metadata = Mapping[str, MetadataValue]
Metadatas = List[Metadata]
UpdateMetadata = Mapping[str, MetadataValue]
CollectionMetadata = Dict[str, Any]
UpdateCollectionMetadata = Dict[str, Any]

Where = Dict[str, Any]
WhereDocument = Dict[str, Any]
IncludeItem = Literal["documents", "embeddings", "metadatas", "distances", "uris", "data"]
Include = List[IncludeItem]
Loadable = List[Optional[Any]]


class GetResult(TypedDict):
    ids: List[ID]
    embeddings: Optional[NDArray[np.float32]]
    documents: Optional[List[Optional[Document]]]
    uris: Optional[List[Optional[URI]]]
    data: Optional[Loadable]
    metadatas: Optional[List[Optional[Metadata]]]
    included: Include


class QueryResult(TypedDict):
    ids: List[IDs]
    embeddings: Optional[List[NDArray[np.float32]]]
    documents: Optional[List[List[Optional[Document]]]]
    uris: Optional[List[List[Optional[URI]]]]
    data: Optional[List[Loadable]]
    metadatas: Optional[List[List[Optional[Metadata]]]]
    distances: Optional[List[List[float]]]
    included: Include


__all__ = [
    "ID", "IDs", "Document", "Documents", "URI", "URIs", "Image", "Images", "Embedding", "Embeddings",
    "PyEmbedding", "PyEmbeddings", "MetadataValue", "Metadata", "Metadatas", "UpdateMetadata",
    "CollectionMetadata", "UpdateCollectionMetadata", "Where", "WhereDocument", "IncludeItem", "Include",
    "Loadable", "GetResult", "QueryResult",
]
