"""Embedding functions as chromadb 1.x has them: the protocol, the default (all-MiniLM-L6-v2, computed
locally), and the name registry that re-creates a collection's persisted embedding function.

>>> from vectordb.utils import embedding_functions
>>> ef = embedding_functions.DefaultEmbeddingFunction()
>>> ef(["hello world"])[0].shape
(384,)

A custom one, as in chromadb:

    class MyEmbeddingFunction(EmbeddingFunction[Documents]):
        def __call__(self, input: Documents) -> Embeddings:
            return [[float(len(t)), 1.0] for t in input]

Any object with chromadb's protocol works as a collection's embedding_function, chromadb's own
classes included; so does a plain callable (texts -> vectors), which is persisted as "legacy".
"""
from __future__ import annotations

import json
import warnings
from abc import abstractmethod
from typing import Any, Dict, List, Optional, Protocol, Sequence, Type, TypeVar, Union

import numpy as np

from ...errors import InvalidArgumentError
from ...validation import to_matrix
from .minilm import DIMENSION, MAX_TOKENS, ModelNotFoundError, locate_model, shared_model

Document = str
Documents = List[Document]
Image = np.ndarray
Images = List[Image]
Embeddable = Union[Documents, Images]
Embedding = np.ndarray
PyEmbedding = Sequence[float]
Embeddings = List[Embedding]
Space = str
D = TypeVar("D", bound=Embeddable, contravariant=True)


def _as_embedding_list(result: Any) -> Embeddings:
    """An embedding function's output as a list of 1-D arrays (what chromadb's wrapper returns); the
    collection checks count, dimension and values before anything is written."""
    if isinstance(result, np.ndarray):
        if result.ndim == 1:
            return [result]
        if result.ndim == 2:
            return list(result)
    elif isinstance(result, (list, tuple)) and result:
        first = result[0]
        if isinstance(first, np.ndarray):
            return list(result)
        if isinstance(first, (list, tuple)):
            out = []
            for i, row in enumerate(result):
                try:
                    out.append(np.asarray(row, dtype=np.float32))
                except (TypeError, ValueError):
                    raise ValueError(f"embedding {i} must contain only numbers, got {row!r:.80}") from None
            return out
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return [np.asarray(result, dtype=np.float32)]
    raise ValueError(
        "Expected embeddings to be a list of floats or ints, a list of lists, a numpy array, or a list of numpy "
        f"arrays, got {type(result).__name__}"
    )


class EmbeddingFunction(Protocol[D]):
    """chromadb's embedding-function protocol: `__call__(self, input) -> Embeddings`, plus `embed_query`,
    `name`, `get_config`, `build_from_config` (the last three let a collection persist it and re-create
    it later; an embedding function without them is "legacy")."""

    @abstractmethod
    def __call__(self, input: D) -> Embeddings: ...

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        call = cls.__call__
        if getattr(call, "_vectordb_wrapped", False):
            return

        # As in chromadb: every subclass's output is normalised to a list of arrays.
        def __call__(self: Any, input: Any) -> Embeddings:
            result = call(self, input)
            if result is None:
                raise ValueError(f"embedding function {type(self).__name__} returned None")
            return _as_embedding_list(result)

        __call__._vectordb_wrapped = True  # type: ignore[attr-defined]
        __call__.__doc__ = call.__doc__
        cls.__call__ = __call__  # type: ignore[method-assign]

    def embed_query(self, input: D) -> Embeddings:
        """Embeds query inputs; the same as __call__ unless a model embeds queries differently."""
        return self.__call__(input)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Subclasses define their own __init__."""

    @staticmethod
    def name() -> str:
        """The name it is registered and persisted under (NotImplemented: legacy)."""
        return NotImplemented

    def default_space(self) -> Space:
        return "l2"

    def supported_spaces(self) -> List[Space]:
        return ["cosine", "l2", "ip"]

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "EmbeddingFunction[D]":
        """Re-creates an instance from `get_config()`'s output (NotImplemented: legacy)."""
        return NotImplemented

    def get_config(self) -> Dict[str, Any]:
        """A JSON-serialisable configuration (NotImplemented: legacy)."""
        return NotImplemented

    def validate_config_update(self, old_config: Dict[str, Any], new_config: Dict[str, Any]) -> None:
        return None

    @staticmethod
    def validate_config(config: Dict[str, Any]) -> None:
        return None

    def is_legacy(self) -> bool:
        return (self.name() is NotImplemented or self.get_config() is NotImplemented
                or self.build_from_config(self.get_config()) is NotImplemented)


class DefaultEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (384-d, unit norm), computed locally with NumPy; the weights load on first use
    from the first source found (see `vectordb.utils.embedding_functions.minilm.locate_model`).

    >>> DefaultEmbeddingFunction()(["A man is eating food."])[0].shape
    (384,)
    """

    def __init__(self, model_path: Optional[str] = None) -> None:
        self._model_path = None if model_path is None else str(model_path)

    def __call__(self, input: Documents) -> Embeddings:
        texts = [input] if isinstance(input, str) else list(input)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"document {i} is {type(t).__name__}: the default embedding function embeds strings")
        return list(shared_model(self._model_path).embed(texts))

    @staticmethod
    def name() -> str:
        return "default"

    def get_config(self) -> Dict[str, Any]:
        return {} if self._model_path is None else {"model_path": self._model_path}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "DefaultEmbeddingFunction":
        return DefaultEmbeddingFunction(model_path=(config or {}).get("model_path"))

    def max_tokens(self) -> int:
        return MAX_TOKENS

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._model_path == self._model_path

    def __hash__(self) -> int:
        return hash((type(self), self._model_path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()" if self._model_path is None else \
            f"{type(self).__name__}(model_path={self._model_path!r})"


class ONNXMiniLM_L6_V2(DefaultEmbeddingFunction):
    """chromadb's name for the same model: collections persisted with it re-create here (computed
    with vectordb's runtime; `preferred_providers` is kept in the configuration and otherwise unused)."""

    def __init__(self, preferred_providers: Optional[List[str]] = None, model_path: Optional[str] = None) -> None:
        super().__init__(model_path)
        self._preferred_providers = preferred_providers

    @staticmethod
    def name() -> str:
        return "onnx_mini_lm_l6_v2"

    def get_config(self) -> Dict[str, Any]:
        return {"preferred_providers": self._preferred_providers, **super().get_config()}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "ONNXMiniLM_L6_V2":
        config = config or {}
        return ONNXMiniLM_L6_V2(config.get("preferred_providers"), config.get("model_path"))


known_embedding_functions: Dict[str, Type[Any]] = {
    "default": DefaultEmbeddingFunction,
    "onnx_mini_lm_l6_v2": ONNXMiniLM_L6_V2,
}


def register_embedding_function(ef_class: Any = None) -> Any:
    """Registers a class under its `name()` so a collection persisted with it can re-create it
    (a decorator, or a call with the class)."""

    def _register(cls: Any) -> Any:
        try:
            name = cls.name()
        except Exception as exc:
            raise ValueError(f"Failed to register embedding function: {exc}") from None
        if not isinstance(name, str):
            raise ValueError(f"Failed to register embedding function {cls.__name__}: name() must return a str")
        known_embedding_functions[name] = cls
        return cls

    return _register(ef_class) if ef_class is not None else _register


def _lookup(name: str) -> Optional[Type[Any]]:
    cls = known_embedding_functions.get(name)
    if cls is not None:
        return cls
    # chromadb's own embedding functions (OpenAI, SentenceTransformer, ...) when it is installed.
    try:
        from chromadb.utils import embedding_functions as chroma_efs
    except Exception:
        return None
    return chroma_efs.known_embedding_functions.get(name)


def config_to_embedding_function(config: Dict[str, Any]) -> Any:
    """Builds the embedding function a persisted {"name", "type": "known", "config"} describes.

    >>> config_to_embedding_function({"name": "default", "type": "known", "config": {}})
    DefaultEmbeddingFunction()
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("Config must contain a 'name' field.")
    name = config["name"]
    cls = _lookup(name)
    if cls is None:
        raise ValueError(
            f"Unsupported embedding function: {name!r} is not registered here; register its class with "
            "vectordb.utils.embedding_functions.register_embedding_function, or pass embedding_function= "
            "when getting the collection"
        )
    ef_config = config.get("config") or {}
    try:
        ef = cls.build_from_config(ef_config)
    except Exception as exc:
        raise ValueError(f"Could not build embedding function {name!r} from config {ef_config}: {exc}") from exc
    if ef is NotImplemented or ef is None:
        raise ValueError(f"embedding function {name!r} cannot be built from its config (build_from_config)")
    return ef


def is_default(ef: Any) -> bool:
    """True for the default embedding function, vectordb's or chromadb's (both mean "the collection's
    persisted one, else all-MiniLM-L6-v2")."""
    cls = type(ef)
    return cls is DefaultEmbeddingFunction or (
        cls.__name__ == "DefaultEmbeddingFunction" and cls.__module__.startswith("chromadb.")
    )


def _name_of(ef: Any) -> Optional[str]:
    name_fn = getattr(ef, "name", None)
    if not callable(name_fn):
        return None
    try:
        name = name_fn()
    except Exception:
        return None
    return name if isinstance(name, str) else None


def embedding_function_config(ef: Any) -> Dict[str, Any]:
    """What a collection persists about `ef`: {"name", "type": "known", "config"}, or {"type": "legacy"}
    for one that cannot be re-created (a plain callable, a class without name/get_config, a config that is
    not JSON). A known one's class is registered, so this process can re-create it."""
    if ef is None:
        return {"type": "legacy"}
    name = _name_of(ef)
    get_config = getattr(ef, "get_config", None)
    if name is None or not callable(get_config):
        return {"type": "legacy"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            config = get_config()
            if config is NotImplemented or type(ef).build_from_config(config) is NotImplemented:
                return {"type": "legacy"}
            json.dumps(config)
        except Exception:
            return {"type": "legacy"}
    if _lookup(name) is None:
        register_embedding_function(type(ef))
    return {"name": name, "type": "known", "config": config}


def check_conflict(embedding_function: Any, persisted: Optional[Dict[str, Any]]) -> None:
    """Raises ValueError when a collection persisted with one embedding function is opened with another
    of a different name (the default, or an unnamed legacy one, never conflicts), as chromadb does."""
    if embedding_function is None or not persisted or is_default(embedding_function):
        return
    new, old = _name_of(embedding_function), persisted.get("name")
    if new is not None and old is not None and new != old:
        raise InvalidArgumentError(
            "An embedding function already exists in the collection configuration, and a new one is provided. "
            "If this is intentional, please embed documents separately. Embedding function conflict: "
            f"new: {new} vs persisted: {old}"
        )



def validate_persisted_config(cfg: Any, where: str) -> Dict[str, Any]:
    """Checks the JSON form of an embedding function ({"type": "legacy"} or {"name", "type": "known",
    "config"}) as given in a configuration or read from a catalog."""
    if not isinstance(cfg, dict) or cfg.get("type") not in ("legacy", "known"):
        raise InvalidArgumentError(f"{where}: expected {{'type': 'legacy'}} or "
                                   f"{{'name': ..., 'type': 'known', 'config': {{...}}}}, got {cfg!r}")
    if cfg["type"] == "legacy":
        return {"type": "legacy"}
    if not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("config", {}), dict):
        raise InvalidArgumentError(f"{where}: a known embedding function needs a str 'name' and a dict 'config', "
                                   f"got {cfg!r}")
    try:
        json.dumps(cfg.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{where}: the embedding function config is not JSON: {exc}") from None
    return {"name": cfg["name"], "type": "known", "config": cfg.get("config", {})}


def check_modify(persisted: Optional[Dict[str, Any]], new: Dict[str, Any]) -> None:
    """modify(configuration={"embedding_function": ...}) may replace a function by one of the same
    name (new config) or set one where none or a legacy one was persisted; another name is an error,
    as in chromadb."""
    if persisted and new.get("type") == "known" and persisted.get("type") == "known" \
            and persisted.get("name") != new.get("name"):
        raise InvalidArgumentError(f"Cannot update embedding function: incompatible types "
                                   f"({persisted.get('name')} vs {new.get('name')})")


def check_conflict_on_create(embedding_function: Any, configuration_ef: Any) -> None:
    """Raises ValueError when both embedding_function= and configuration["embedding_function"] are given
    with different names (the default parameter never conflicts), as chromadb does."""
    if embedding_function is None or configuration_ef is None or is_default(embedding_function):
        return
    new = _name_of(embedding_function)
    other = configuration_ef.get("name") if isinstance(configuration_ef, dict) else _name_of(configuration_ef)
    if new is not None and other is not None and new != other:
        raise InvalidArgumentError("Multiple embedding functions provided. Please provide only one. Embedding function "
                         f"conflict: {new} vs {other}")


def resolve_on_create(configuration: Any, embedding_function: Any) -> tuple[Optional[Dict[str, Any]], Any]:
    """What a new collection persists about its embedding function (configuration["embedding_function"],
    an object or its JSON form, else the embedding_function argument), and the one its handle uses."""
    configured = configuration.get("embedding_function") if isinstance(configuration, dict) else None
    check_conflict_on_create(embedding_function, configured)
    if configured is None:
        if embedding_function is None or embedding_function is NEVER_EMBED:
            return None, embedding_function  # nothing persisted, as chromadb
        return embedding_function_config(embedding_function), embedding_function
    if isinstance(configured, dict):
        return validate_persisted_config(configured, "configuration['embedding_function']"), embedding_function
    if embedding_function is None or is_default(embedding_function):
        embedding_function = configured
    return embedding_function_config(configured), embedding_function


class _NeverEmbed:
    """The embedding function of handles that must never embed: the server's (clients send vectors,
    as to chroma's server) and a shard's (the RayClient embeds before records reach it)."""

    def __repr__(self) -> str:
        return "NEVER_EMBED"


NEVER_EMBED: Any = _NeverEmbed()


class EmbeddingResolver:
    """Which embedding function a collection handle embeds with, as chromadb decides: the one passed
    when the handle was made, unless that is the default or None: then the one the collection
    persisted, re-created from its name and config; with none persisted (or a legacy one), the
    default for the default, and no embedding for None. NEVER_EMBED: never embed."""

    def __init__(self, passed: Any):
        self.passed = passed
        self._built: Optional[tuple[str, Any]] = None  # (persisted config as JSON, instance)

    def function(self, persisted: Optional[Dict[str, Any]]) -> Any:
        ef = self.passed
        if ef is NEVER_EMBED:
            return None
        if ef is not None and not is_default(ef):
            return ef
        if persisted and persisted.get("type") == "known":
            key = json.dumps(persisted, sort_keys=True)
            if self._built is None or self._built[0] != key:
                try:
                    self._built = (key, config_to_embedding_function(persisted))
                except ValueError as exc:
                    raise InvalidArgumentError(
                        f"the collection's persisted embedding function cannot be re-created: {exc}"
                    ) from exc
            return self._built[1]
        return ef

    def embed(self, persisted: Optional[Dict[str, Any]], texts: Any, is_query: bool = False,
              what: str = "documents") -> np.ndarray:
        """Embeds `texts` (a str or a list of str) and checks the output: one finite vector per text, all of
        one dimension; the caller checks that dimension against the collection before writing."""
        ef = self.function(persisted)
        if ef is None:
            raise InvalidArgumentError(
                f"{what} without embeddings need an embedding function, and this collection handle has none "
                "(embedding_function=None) and none was persisted with the collection: pass embeddings, or get "
                "the collection with an embedding_function"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise InvalidArgumentError(f"{what} to embed must be a non-empty list of strings")
        fn = getattr(ef, "embed_query", None) if is_query else None
        result = fn(texts) if callable(fn) else ef(texts)
        label = _name_of(ef) or getattr(ef, "__name__", None) or type(ef).__name__
        try:
            matrix = to_matrix(result, "embeddings")
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                f"embedding function {label!r} returned bad embeddings for {what}: {exc}") from None
        if matrix.shape[0] != len(texts):
            raise InvalidArgumentError(f"embedding function {label!r} returned {matrix.shape[0]} embeddings for "
                                       f"{len(texts)} {what}: expected one per text")
        return matrix


__all__ = [
    "EmbeddingFunction",
    "DefaultEmbeddingFunction",
    "ONNXMiniLM_L6_V2",
    "Documents",
    "Embeddings",
    "Embedding",
    "ModelNotFoundError",
    "DIMENSION",
    "register_embedding_function",
    "config_to_embedding_function",
    "known_embedding_functions",
    "embedding_function_config",
    "check_conflict",
    "check_conflict_on_create",
    "validate_persisted_config",
    "EmbeddingResolver",
    "resolve_on_create",
    "is_default",
    "locate_model",
]
