"""Copy ChromaDB collections into a vectordb database, then verify the copy.

    pip install 'vectordb[migrate]'
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --use-ivf
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --collections images docs

What is copied, per collection: every id, embedding (float32, bit for bit), metadata and document,
the collection's metadata and its distance space (chromadb 1.x keeps the space in the collection's
schema/configuration, older databases in the metadata key "hnsw:space").

How it reads: through the chromadb package, in pages (get with limit/offset), in a child process so
that a crash inside chromadb (a corrupt HNSW segment can segfault its loader) is reported instead of
taking this process down. Opening a chromadb directory upgrades its files in place, so by default the
tool reads from a temporary copy (placed under $TMPDIR); --in-place reads the original.

Re-running is safe; the rule:
- A collection is copied into a temporary vectordb collection named "migrating-<chromadb collection
  UUID>" and renamed to its own name only once it is complete and verified, so a name never shows a
  partial copy. Finding that temporary collection means an earlier run was interrupted: the run
  resumes it (ids already there are skipped, the missing ones added), whatever --on-existing says,
  except --on-existing overwrite, which starts that copy again from nothing.
- Finished copies are recorded in <vectordb path>/migrate-chromadb.json (vectordb collection id ->
  chromadb collection id and record count). A collection recorded there, from the same chromadb
  collection and unchanged since, is "done": running the same command again skips it.
- Any other collection that already exists is handled by --on-existing: error (default: stop
  before anything is written), skip, overwrite (copy into the temporary collection, verify, then
  replace), append (add the records whose ids are not in the collection yet; records already there
  are never modified and any that differ from chromadb are reported; appending again is a no-op).
So after an interruption (Ctrl-C, kill -9, power loss), run the same command again.

Verification after each collection: the record count, the set of ids (an order-independent digest),
a random sample of records compared exactly (ids, float32 embeddings, metadata with value types,
documents), and a sample of queries. The query answers are compared with exact nearest neighbours
computed in NumPy (float64) over the embeddings read from chromadb, so a flat vectordb collection
must return the exact top ids (near-ties within float32 rounding are accepted); an IVF collection
reports its recall, and chromadb's own (approximate, HNSW) recall is reported next to it. Any
difference is printed and the exit status is 1. Exit status 2: nothing was done (bad arguments,
chromadb not installed, a collection that already exists with --on-existing error, ...).
"""
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`vectordb migrate ARGS` (also migrate/migrate_from_chromadb.py ARGS); returns the exit status.

    >>> vectordb.migrate.main(["--chromadb-path", "./chroma_db", "--vectordb-path", "./vector_db"])
    """
    # Imported on call, so `python -m vectordb.migrate.source` (the reader child) starts lean.
    from vectordb.migrate.cli import main as cli_main

    return cli_main(argv)

