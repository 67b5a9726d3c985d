"""The package's one reader of BEIR-style data: a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv), a corpus .jsonl alone, or a plain text file with one passage per line.

Lines: every file is split on "\\n" only, and one "\\r" before it is dropped ("\\r\\n" files).
Nothing else ends a line: U+2028, U+2029, U+0085, \\x0b, \\x0c and \\x1c-\\x1e (which
`str.splitlines()` would split on) are legal inside JSON strings and passage texts. Files are
streamed as UTF-8, and every error names the file and the 1-based line as `path:line`.

JSON lines: blank lines are skipped; control characters left raw inside JSON strings are
accepted (some writers do not escape them).

Corpus and queries records: a JSON object with "_id" (a non-empty string or an integer, read as
its decimal string), optional "title" and "text" (strings; missing or null read as ""). Ids are
unique within a file. Passage text is `title + " " + text` when the stripped title is non-empty
(as BEIR's dense retrievers do), else `text`. For a text file the id of a passage is its 0-based
line number as a string (colbert-ai's pid convention); blank lines are kept as empty passages so
ids stay line numbers.

Qrels: `query-id<TAB>corpus-id<TAB>score` rows; a first line whose first field is "query-id" is
the header and is skipped, blank lines are skipped. A row must have exactly three fields and
non-empty ids. The score must be an integer: "2", "-1", or an integral float such as "1.0" (read
as 1); "0.5", "nan", "inf" or "high" are InputErrors naming `path:line`. A (query, doc) pair
judged twice keeps its last score, as BEIR's own loader does.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lateint_jax.errors import InputError

QRELS_HEADER = "query-id"


def passage_text(title: str | None, text: str | None) -> str:
    """The text indexed for a passage: `title + " " + text`, or `text` when the title is blank."""
    title, text = (title or "").strip(), text or ""
    return f"{title} {text}" if title else text


@dataclass(eq=False)
class Corpus:
    """Passages in file order: ids [N] (unique strings), titles [N] and bodies [N] (the BEIR
    "title" and "text" fields, "" when absent). `texts` [N] are the passage texts to encode.
    Read-only once built: `texts` and the id lookup are computed once, on first use."""

    ids: list[str]
    titles: list[str]
    bodies: list[str]

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.titles) == len(self.bodies):
            raise ValueError(
                f"Corpus needs one title and body per id: {len(self.ids)} ids, "
                f"{len(self.titles)} titles, {len(self.bodies)} bodies"
            )

    @classmethod
    def untitled(cls, ids: list[str], texts: list[str]) -> Corpus:
        """A corpus of passages without titles."""
        return cls(list(ids), [""] * len(ids), list(texts))

    @cached_property
    def texts(self) -> list[str]:
        """Passage texts [N]: `passage_text(titles[i], bodies[i])`."""
        return [passage_text(t, b) for t, b in zip(self.titles, self.bodies)]

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {doc_id: row for row, doc_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._rows

    def passage(self, doc_id: str) -> str:
        """The passage text of `doc_id`; KeyError when the corpus does not hold it."""
        row = self._rows[doc_id]
        return passage_text(self.titles[row], self.bodies[row])

    def get(self, doc_id: str) -> dict[str, str]:
        """{"title", "text"} of `doc_id` (the raw fields), {} when the corpus does not hold it."""
        row = self._rows.get(doc_id)
        if row is None:
            return {}
        return {"title": self.titles[row], "text": self.bodies[row]}

    def passages_by_id(self) -> dict[str, str]:
        """{doc id: passage text}, in file order."""
        return dict(zip(self.ids, self.texts))


@dataclass
class BeirDataset:
    corpus: Corpus
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def read_lines(path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for each line of a UTF-8 file, streamed. Lines end at "\\n"
    only; the "\\n" and one "\\r" before it are removed. A last line without "\\n" counts."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:  # bytes: iteration splits on b"\n" alone
            for number, raw in enumerate(handle, 1):
                yield number, _decode_line(raw, path, number)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None


def _decode_line(raw: bytes, path: Path, number: int) -> str:
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}:{number}: not UTF-8 text ({err.reason})") from None


def read_json_lines(path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON value) for each non-blank line of a JSON-lines file."""
    path = Path(path)
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line, strict=False)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None


def _string_field(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f'{where}: "{key}" must be a string, got {type(value).__name__}')
    return value


def _record_id(record: object, where: str) -> str:
    if not isinstance(record, dict) or "_id" not in record:
        raise InputError(f'{where}: expected an object with an "_id" field')
    value = record["_id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f'{where}: "_id" must be a string or an integer, got {value!r}')
    if value == "":
        raise InputError(f'{where}: empty "_id"')
    return str(value)


def read_records(path) -> Iterator[tuple[str, str, str]]:
    """(id, title, text) of each record of a BEIR corpus or queries .jsonl, in file order.
    Raises InputError naming `path:line` for a bad record or a repeated id."""
    path = Path(path)
    first_line: dict[str, int] = {}
    for number, record in read_json_lines(path):
        where = f"{path}:{number}"
        record_id = _record_id(record, where)
        if record_id in first_line:
            raise InputError(
                f"{where}: duplicate id {record_id!r} (first on line {first_line[record_id]})"
            )
        first_line[record_id] = number
        yield record_id, _string_field(record, "title", where), _string_field(record, "text", where)


def read_corpus_jsonl(path) -> Corpus:
    """A BEIR corpus .jsonl -> Corpus (may be empty)."""
    ids, titles, bodies = [], [], []
    for doc_id, title, body in read_records(path):
        ids.append(doc_id)
        titles.append(title)
        bodies.append(body)
    return Corpus(ids, titles, bodies)


def read_text_lines(path) -> Corpus:
    """A text file, one passage per line -> Corpus with ids "0", "1", ... (may be empty)."""
    lines = [line for _, line in read_lines(path)]
    return Corpus.untitled([str(i) for i in range(len(lines))], lines)


def load_corpus(path) -> Corpus:
    """A BEIR folder, a corpus .jsonl, or a text file (one passage per line) -> Corpus.
    Raises InputError when the path is missing or the corpus is empty."""
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise InputError(f"{path} is a folder without corpus.jsonl (not a BEIR dataset)")
        corpus = read_corpus_jsonl(path / "corpus.jsonl")
    elif path.is_file():
        corpus = read_corpus_jsonl(path) if path.suffix == ".jsonl" else read_text_lines(path)
    else:
        raise InputError(f"corpus {path} does not exist")
    if len(corpus) == 0:
        raise InputError(f"corpus {path} is empty")
    return corpus


def load_queries(path) -> dict[str, str]:
    """queries.jsonl (a file or the BEIR folder holding it) -> {query id: text}, in file order."""
    path = Path(path)
    path = path / "queries.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"queries file {path} does not exist")
    return {query_id: text for query_id, _, text in read_records(path)}


def qrels_score(value, where: str) -> int:
    """A relevance score as an int: an integer, or a number or numeric string with an integral
    value ("1.0" -> 1). Anything else ("0.5", "nan", "high") is an InputError naming `where`."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: score {value!r} is not a number") from None
    if not number.is_integer():
        raise InputError(f"{where}: score {value!r} is not an integer")
    return int(number)


def _qrels_row(line: str, where: str) -> tuple[str, str, int]:
    fields = line.split("\t")
    if len(fields) != 3:
        raise InputError(
            f"{where}: expected `query-id<TAB>corpus-id<TAB>score`, got {len(fields)} field(s)"
        )
    query_id, doc_id, score = fields
    if not query_id or not doc_id:
        raise InputError(f"{where}: empty query-id or corpus-id")
    return query_id, doc_id, qrels_score(score, where)


def load_qrels(folder, split: str = "test") -> dict[str, dict[str, int]]:
    """qrels/<split>.tsv (see the module docstring) -> {query id: {doc id: score}}."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))
        raise InputError(f"qrels file {path} does not exist (splits here: {available or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in read_lines(path):
        if not line.strip() or (number == 1 and line.split("\t")[0] == QRELS_HEADER):
            continue
        query_id, doc_id, score = _qrels_row(line, f"{path}:{number}")
        qrels.setdefault(query_id, {})[doc_id] = score
    if not qrels:
        raise InputError(f"{path} has no judgements")
    return qrels


def load_beir(folder, split: str = "test", with_corpus: bool = True) -> BeirDataset:
    """A BEIR folder -> corpus, the queries judged in `split`, and their qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"BEIR folder {folder} does not exist")
    qrels = load_qrels(folder, split)
    all_queries = load_queries(folder)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise InputError(
            f"{len(missing)} judged query ids are not in queries.jsonl, e.g. {missing[0]!r}"
        )
    queries = {q: all_queries[q] for q in qrels}
    corpus = load_corpus(folder) if with_corpus else Corpus([], [], [])
    return BeirDataset(corpus, queries, qrels)
