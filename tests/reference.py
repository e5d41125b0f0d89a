"""Float64 references the API suites compare the engine's answers with."""
from __future__ import annotations

import numpy as np


def ref_distances(space: str, queries: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(nq, n) distances in float64 from the float32 values the collection stores."""
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    x = np.asarray(data, dtype=np.float32).astype(np.float64)
    if space == "l2":
        return ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    if space == "ip":
        return 1.0 - q @ x.T
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - qn @ xn.T
