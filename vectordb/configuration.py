"""A collection's configuration: chromadb 1.x's dicts in ({"hnsw": {"space": ...}, ...}), the
catalog's flat form inside, and chromadb's shape back out, with vectordb's own keys alongside.

The catalog keeps {"space", "dimension", "use_ivf", "n_clusters", "n_probe", "quantization"} and, to report them
back as chromadb does, the hnsw / spann parameters given at creation. Those tune chromadb's HNSW and
SPANN indexes, which vectordb does not have: they are accepted, kept and logged at debug level.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from .errors import InvalidArgumentError
from .utils.embedding_functions import validate_persisted_config
from .validation import (
    SPACES,
    validate_collection_metadata,
    validate_dimension,
    validate_name,
    validate_positive_int,
)

log = logging.getLogger("vectordb")

# chromadb's HNSW parameters and the values it reports when none were given.
HNSW_DEFAULTS = {"ef_construction": 100, "ef_search": 100, "max_neighbors": 16, "resize_factor": 1.2,
                 "sync_threshold": 1000}
HNSW_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors", "num_threads", "batch_size",
             "sync_threshold", "resize_factor")
SPANN_KEYS = ("space", "search_nprobe", "write_nprobe", "ef_construction", "ef_search", "max_neighbors",
              "reassign_neighbor_count", "split_threshold", "merge_threshold")
# chromadb 0.x collection metadata that chromadb 1.x reads as hnsw configuration.
LEGACY_METADATA = {"hnsw:construction_ef": "ef_construction", "hnsw:search_ef": "ef_search",
                   "hnsw:M": "max_neighbors", "hnsw:num_threads": "num_threads", "hnsw:batch_size": "batch_size",
                   "hnsw:sync_threshold": "sync_threshold", "hnsw:resize_factor": "resize_factor"}
OWN_KEYS = ("dimension", "use_ivf", "n_clusters", "n_probe", "quantization")
# Codes kept beside the float32 vectors (None: none); the float32 vectors still answer every query.
QUANTIZATIONS = (None, "sq8", "pq4")


def validate_quantization(quantization: Any) -> Optional[str]:
    if quantization not in QUANTIZATIONS:
        raise InvalidArgumentError(f"quantization must be None, 'sq8' or 'pq4', got {quantization!r}")
    return quantization


def _index_params(configuration: dict, kind: str, allowed: tuple) -> Optional[dict]:
    params = configuration.get(kind)
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidArgumentError(f"configuration[{kind!r}] must be a dict, got {type(params).__name__}")
    unknown = sorted(str(k) for k in params if k not in allowed)
    if unknown:
        raise InvalidArgumentError(f"configuration[{kind!r}] has unknown keys {unknown}: "
                                   f"expected some of {', '.join(allowed)}")
    for key, value in params.items():
        if key != "space" and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidArgumentError(f"configuration[{kind!r}][{key!r}] must be a number, got {value!r}")
    tuning = {k: v for k, v in params.items() if k != "space"}
    if tuning:
        log.debug("configuration[%r] %s: accepted and kept; vectordb has no %s index, so they change nothing",
                  kind, tuning, kind.upper())
    return dict(params)


def resolve(metadata: Optional[dict], configuration: Any, dimension: Any, use_ivf: Any, n_clusters: Any,
            n_probe: Any, quantization: Any = None) -> dict:
    """The catalog configuration of a new collection, from create_collection's arguments."""
    if configuration is None:
        configuration = {}
    if not isinstance(configuration, dict):
        raise InvalidArgumentError(f"configuration must be a dict, got {type(configuration).__name__}")
    unknown = sorted(str(k) for k in configuration if k not in ("hnsw", "spann", "embedding_function") + OWN_KEYS)
    if unknown:
        raise InvalidArgumentError(f"configuration has unknown keys {unknown}: expected hnsw, spann, "
                                   f"embedding_function, {', '.join(OWN_KEYS)}")
    hnsw = _index_params(configuration, "hnsw", HNSW_KEYS)
    spann = _index_params(configuration, "spann", SPANN_KEYS)
    if hnsw is not None and spann is not None:
        raise InvalidArgumentError("configuration takes hnsw or spann, not both")
    legacy = {LEGACY_METADATA[k]: v for k, v in (metadata or {}).items() if k in LEGACY_METADATA}
    if legacy:
        hnsw = {**legacy, **(hnsw or {})}
    spaces = {where: s for where, s in (("configuration", (hnsw or spann or {}).get("space")),
                                        ("metadata hnsw:space", (metadata or {}).get("hnsw:space"))) if s is not None}
    if len(set(spaces.values())) > 1:
        raise InvalidArgumentError(f"configuration space {spaces['configuration']!r} contradicts metadata "
                                   f"hnsw:space {spaces['metadata hnsw:space']!r}")
    space = next(iter(spaces.values()), "l2")
    if space not in SPACES:
        raise InvalidArgumentError(f"space {space!r} is not valid: expected one of {', '.join(SPACES)}")
    own = {"dimension": dimension, "n_clusters": n_clusters, "n_probe": n_probe, "quantization": quantization}
    for key in own:
        if configuration.get(key) is not None:
            if own[key] is not None and own[key] != configuration[key]:
                raise InvalidArgumentError(f"{key}={own[key]!r} contradicts "
                                           f"configuration[{key!r}]={configuration[key]!r}")
            own[key] = configuration[key]
    if "use_ivf" in configuration:
        use_ivf = use_ivf or configuration["use_ivf"]
    if not isinstance(use_ivf, bool):
        raise InvalidArgumentError(f"use_ivf must be a bool, got {use_ivf!r}")
    cfg: dict = {
        "space": space,
        "dimension": validate_dimension(own["dimension"]),
        "use_ivf": use_ivf,
        "n_clusters": validate_positive_int(own["n_clusters"], "n_clusters", allow_none=True),
        "n_probe": validate_positive_int(own["n_probe"], "n_probe", allow_none=True),
        "quantization": validate_quantization(own["quantization"]),
    }
    if hnsw:
        cfg["hnsw"] = {k: v for k, v in hnsw.items() if k != "space"}
    if spann is not None:
        cfg["spann"] = {k: v for k, v in spann.items() if k != "space"}
    return cfg


def chroma_shape(cfg: dict) -> dict:
    """The configuration as chromadb 1.x reports it (the embedding function as persisted: its JSON
    form; the collection object gives the function itself), with vectordb's own keys alongside."""
    space = cfg["space"]
    if "spann" in cfg:
        hnsw, spann = None, {"space": space, **cfg["spann"]}
    else:
        hnsw, spann = {"space": space, **HNSW_DEFAULTS, **cfg.get("hnsw", {})}, None
    out = {"hnsw": hnsw, "spann": spann, "embedding_function": cfg.get("embedding_function")}
    for key in OWN_KEYS:
        out[key] = cfg.get(key)
    return out


def validate_modify(configuration: Any) -> dict:
    """The changes modify(configuration=...) applies: {"n_probe": int or None} and chromadb's
    hnsw / spann tuning (kept and reported, with no effect here)."""
    if not isinstance(configuration, dict):
        raise InvalidArgumentError(f"configuration must be a dict, got {type(configuration).__name__}")
    unknown = sorted(str(k) for k in configuration if k not in ("n_probe", "hnsw", "spann", "embedding_function"))
    if unknown:
        raise InvalidArgumentError(f"modify(configuration=...) accepts n_probe, hnsw, spann and embedding_function, "
                                   f"got {unknown} (the distance space, dimension and index kind of a collection "
                                   f"cannot change)")
    changes: dict = {}
    if "embedding_function" in configuration:  # its JSON form (Collection.modify converts the object)
        changes["embedding_function"] = validate_persisted_config(configuration["embedding_function"],
                                                                  "configuration['embedding_function']")
    if "n_probe" in configuration:
        changes["n_probe"] = validate_positive_int(configuration["n_probe"], "n_probe", allow_none=True)
    for kind, allowed in (("hnsw", HNSW_KEYS), ("spann", SPANN_KEYS)):
        params = _index_params(configuration, kind, allowed)
        if params and "space" in params:
            raise InvalidArgumentError("changing the distance space of an existing collection is not supported")
        if params:
            changes[kind] = params
    return changes


def validate_modify_args(name: Optional[str], metadata: Optional[dict], configuration: Any,
                         current_space: Callable[[], Optional[str]]) -> tuple[Optional[dict], dict]:
    """Collection.modify's arguments, checked whole before anything changes: the new name, the new
    metadata (its "hnsw:space", if any, must be current_space()) and the configuration changes
    (validate_modify). Returns the normalized metadata and the changes."""
    if name is not None:
        validate_name(name)
    if metadata is not None:
        metadata = validate_collection_metadata(metadata)
        space = metadata.get("hnsw:space") if metadata else None
        if space is not None and space != current_space():
            raise InvalidArgumentError("changing the distance space of an existing collection is not supported")
    changes = validate_modify(configuration) if configuration is not None else {}
    return metadata, changes
