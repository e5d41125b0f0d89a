"""What the migration does with each collection (copy, resume, skip, overwrite, append), decided from
the target database and the record of finished copies (migrate-chromadb.json).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

TEMP_PREFIX = "migrating-"  # + the chromadb collection's UUID: where a copy lives until verified


def target_space(col: Any) -> str:
    conf = getattr(col, "configuration", None)
    if callable(conf):
        conf = conf()
    if isinstance(conf, dict):
        hn = conf.get("hnsw")
        if isinstance(hn, dict) and hn.get("space"):
            return str(hn["space"])
        if conf.get("space"):
            return str(conf["space"])
    md = col.metadata or {}
    return str(md.get("hnsw:space") or "l2")


def target_ivf(col: Any) -> Optional[str]:
    """A description of the collection's trained IVF index, or None when queries scan every
    record (a flat collection, or an IVF one too small to have been trained yet)."""
    try:
        st = col.stats()
    except Exception:  # noqa: BLE001
        return None
    if not isinstance(st, dict) or str(st.get("index", "")).lower() != "ivf" or not st.get("trained", True):
        return None
    return f"ivf, n_probe {st.get('n_probe')} of {st.get('n_clusters')} lists"


def existing_ids(col: Any, ids: Sequence[str]) -> set:
    try:
        got = col.get(ids=list(ids), include=[])
    except (ValueError, TypeError):
        got = col.get(ids=list(ids), include=["metadatas"])
    return set(got["ids"])


def target_dimension(col: Any) -> Optional[int]:
    g = col.get(limit=1, include=["embeddings"])
    e = g.get("embeddings")
    if e is None or len(g["ids"]) == 0:
        return None
    return int(np.asarray(e).shape[1])


@dataclass
class Plan:
    src: dict
    action: str  # create | resume | overwrite | skip | done | append | conflict
    reason: str = ""


@dataclass
class Result:
    name: str
    action: str
    space: str = ""
    records: int = 0
    copied: int = 0
    status: str = ""
    differences: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    chroma_recall: Optional[float] = None
    vectordb_recall: Optional[float] = None
    exact_checked: bool = False
    index: str = ""  # "flat", or the IVF index's n_probe and n_clusters
    sampled: int = 0
    queries: int = 0
    seconds: float = 0.0

    def ok(self) -> bool:
        return not self.differences and not self.status.startswith("ERROR")


def temp_name(src: dict) -> str:
    return TEMP_PREFIX + src["id"]


def _existing(client: Any, name: str) -> Any:
    if client is None:
        return None
    try:
        return client.get_collection(name)
    except Exception:  # noqa: BLE001 - "does not exist", whatever class the client uses for it
        return None


STATE_FILE = "migrate-chromadb.json"


class MigrationState:
    """Which vectordb collections earlier runs copied completely, and from which chromadb collection
    (<vectordb path>/migrate-chromadb.json, replaced atomically), so that running the same command
    again recognises its own finished work instead of calling it a conflict."""

    def __init__(self, dst_path: str):
        self.path = os.path.join(dst_path, STATE_FILE)
        self.entries: Dict[str, dict] = {}
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self.entries = dict(json.load(fh)["collections"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"warning: ignoring {self.path}: {e}", file=sys.stderr)

    def entry(self, target: Any) -> Optional[dict]:
        return self.entries.get(str(target.id)) if target is not None else None

    def record(self, target: Any, src: dict, source_path: str) -> None:
        self.entries[str(target.id)] = {"name": src["name"], "source_id": src["id"], "source_path": source_path,
                                        "records": src["count"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"format": 1, "collections": self.entries}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def make_plan(client: Any, src: dict, on_existing: str, state: Optional[MigrationState] = None) -> Plan:
    """What to do with one collection. A copy is written under temp_name(src) and renamed to the
    collection's name once verified, so a name only ever shows a complete copy; finding the
    temporary collection means an earlier run was interrupted."""
    name = src["name"]
    target = _existing(client, name)
    partial = _existing(client, temp_name(src))
    if partial is not None:
        if on_existing == "overwrite":
            return Plan(src, "overwrite", f"an interrupted copy ({temp_name(src)}) is started again")
        if target is not None:
            return Plan(src, "conflict", f"both an interrupted copy {temp_name(src)!r} and a collection "
                                         f"{name!r} exist; --on-existing overwrite starts the copy again and "
                                         "replaces the collection")
        return Plan(src, "resume", f"finishing the interrupted copy {temp_name(src)}")
    if target is None:
        return Plan(src, "create")
    done = state.entry(target) if state is not None else None
    if done and done["records"] != target.count():
        done = None  # changed since it was copied: an ordinary existing collection now
    if done and done["source_id"] == src["id"] and on_existing in ("error", "skip"):
        if done["records"] == src["count"] or on_existing == "skip":
            return Plan(src, "done", "copied completely by an earlier run")
        return Plan(src, "conflict", f"an earlier run copied it when chromadb held {done['records']} records, "
                                     f"now {src['count']}: use --on-existing append (adds the new ids) or overwrite")
    if on_existing == "error":
        return Plan(src, "conflict", "already exists in vectordb; choose --on-existing skip, overwrite or append")
    if on_existing == "append":
        tspace = target_space(target)
        if tspace != src["space"]:
            return Plan(src, "conflict", f"cannot append: the vectordb collection uses space {tspace!r}, "
                                         f"the chromadb collection {src['space']!r}")
        tdim = target_dimension(target)
        sdim = src.get("dimension")
        if tdim is not None and sdim is not None and tdim != sdim:
            return Plan(src, "conflict", f"cannot append: the vectordb collection has dimension {tdim}, "
                                         f"the chromadb collection {sdim}")
    return Plan(src, on_existing)
