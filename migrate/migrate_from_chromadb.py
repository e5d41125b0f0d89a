#!/usr/bin/env python3
"""Copy ChromaDB collections into a vectordb database, then verify the copy (same as `vectordb migrate`).

    pip install 'vectordb[migrate]'
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --use-ivf
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --collections images docs

The tool lives in the package vectordb.migrate (its docstring says what is copied, how re-runs resume
and what is verified); this script calls it, from an installation or from a source checkout.
"""
import os
import sys

try:
    import vectordb.migrate
except ImportError:
    # A source checkout with the extension built in place: the package sits next to this directory.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import vectordb.migrate

if __name__ == "__main__":
    sys.exit(vectordb.migrate.main())
