"""Document texts for display, reranking and explanations, read from a BEIR corpus.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from lateint_jax.data.beir import passage_text
from lateint_jax.errors import InputError


class Corpus:
    """id -> (title, text), in file order."""

    def __init__(self, docs: dict[str, tuple[str, str]]):
        self.docs = docs

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Corpus:
        """Reads `_id`, `title`, `text` per line (a folder means `folder/corpus.jsonl`)."""
        path = Path(path)
        if path.is_dir():
            path = path / "corpus.jsonl"
        if not path.is_file():
            raise InputError(f"corpus: no corpus.jsonl at {path}")
        docs = {}
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    docs[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise InputError(f"corpus: {path}:{number} is not a BEIR row ({err})") from None
        return cls(docs)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.docs

    def __len__(self) -> int:
        return len(self.docs)

    def ids(self) -> list[str]:
        return list(self.docs)

    def passage(self, doc_id: str) -> str:
        title, text = self.docs[doc_id]
        return passage_text(title, text)

    def get(self, doc_id: str) -> dict:
        """{"title", "text"} for a hit, empty when the id has no text here."""
        if doc_id not in self.docs:
            return {}
        title, text = self.docs[doc_id]
        return {"title": title, "text": text}
