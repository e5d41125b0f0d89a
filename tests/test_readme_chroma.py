"""The README's "Coming from ChromaDB" snippets run as written (LangChain/LlamaIndex ones when the
integrations extra is installed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippets() -> list:
    text = README.read_text()
    start = text.index("## Coming from ChromaDB")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_snippet_runs(index, tmp_path, monkeypatch):
    code = _snippets()[index]
    for module in ("langchain_chroma", "llama_index.vector_stores.chroma"):
        if module in code:
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README snippet {index}", "exec"), {"__name__": "__readme__"})
