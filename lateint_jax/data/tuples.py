"""N-way training tuples: the JSONL format, its reader, and deterministic resumable batching.

One JSON object per line:

    {"qid": "12", "query": "text",                # either may be given; "query" wins
     "pos_id": "4983", "positive": "text",       # the positive: corpus id and/or text
     "neg_ids": ["77", "901"], "negatives": ["text", ...],   # hard negatives: ids or texts
     "scores": [9.1, 2.3, -0.5]}                  # optional teacher scores, positive first

Ids are resolved against a BEIR corpus (`title + " " + text`) and queries file when texts are
absent (see `beir_texts`). Lines are read by lateint_jax.data.beir (they end at "\n" only). A tuple with more than K documents (positive + negatives) keeps its first K, the order
the miner wrote them in (first-stage rank); fewer than K is an error, as is a missing or short
"scores" list when distillation is on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lateint_jax.data import beir
from lateint_jax.errors import InputError


@dataclass(frozen=True)
class TrainingTuple:
    query: str
    documents: tuple[str, ...]  # positive first, then negatives
    scores: tuple[float, ...] | None  # teacher scores aligned with documents


def beir_texts(folder: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """({doc id: passage text}, {query id: query text}) of a BEIR folder, to resolve tuple ids
    (read by lateint_jax.data.beir)."""
    return beir.load_corpus(folder).passages_by_id(), beir.load_queries(folder)


def read_tuples(
    path: str | os.PathLike,
    nway: int,
    *,
    corpus: dict[str, str] | None = None,
    queries: dict[str, str] | None = None,
    require_scores: bool = False,
) -> list[TrainingTuple]:
    """Read a tuples JSONL file into K = `nway` documents per tuple (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"tuples file not found: {path}")
    if nway < 2:
        raise InputError(f"nway must be at least 2, got {nway}")
    tuples = []
    for number, line in beir.read_json_lines(path):
        where = f"{path}:{number}"
        query, documents = resolve_line(line, where, corpus=corpus, queries=queries)
        if len(documents) < nway:
            raise InputError(
                f"{where}: has {len(documents)} documents (positive + negatives) but the config "
                f"asks for nway={nway}"
            )
        scores = line.get("scores")
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(documents):
                raise InputError(
                    f"{where}: 'scores' must list one teacher score per document "
                    f"({len(documents)}), positive first"
                )
            scores = tuple(float(s) for s in scores[:nway])
        elif require_scores:
            raise InputError(
                f"{where}: no teacher 'scores' but distillation is on "
                "(run `lateint teacher` on the tuples first, or train with loss='nway_ce')"
            )
        tuples.append(TrainingTuple(query, documents[:nway], scores))
    if not tuples:
        raise InputError(f"{path} holds no tuples")
    return tuples


def resolve_line(
    line: dict,
    where: str,
    *,
    corpus: dict[str, str] | None = None,
    queries: dict[str, str] | None = None,
) -> tuple[str, tuple[str, ...]]:
    """(query text, (positive, *negatives) texts) of one tuple line; `where` names it in errors."""
    if not isinstance(line, dict):
        raise InputError(f"{where}: each line must be a JSON object")
    query = _text(line, "query", "qid", queries, where, "queries")
    positive = _text(line, "positive", "pos_id", corpus, where, "corpus")
    return query, (positive, *_texts(line, where, corpus))


def _text(line, text_key, id_key, table, where, table_name) -> str:
    if isinstance(line.get(text_key), str):
        return line[text_key]
    if id_key in line:
        if table is None:
            raise InputError(f"{where}: '{id_key}' given but no {table_name} to resolve it")
        key = str(line[id_key])
        if key not in table:
            raise InputError(f"{where}: {id_key} {key!r} is not in the {table_name}")
        return table[key]
    raise InputError(f"{where}: needs '{text_key}' (text) or '{id_key}' (id)")


def _texts(line, where, corpus) -> list[str]:
    if isinstance(line.get("negatives"), list):
        if not all(isinstance(t, str) for t in line["negatives"]):
            raise InputError(f"{where}: 'negatives' must be a list of texts")
        return line["negatives"]
    if isinstance(line.get("neg_ids"), list):
        if corpus is None:
            raise InputError(f"{where}: 'neg_ids' given but no corpus to resolve them")
        missing = [str(i) for i in line["neg_ids"] if str(i) not in corpus]
        if missing:
            raise InputError(f"{where}: neg_ids {missing[:3]} are not in the corpus")
        return [corpus[str(i)] for i in line["neg_ids"]]
    raise InputError(f"{where}: needs a 'negatives' (texts) or 'neg_ids' (ids) list")


def write_tuples(path: str | os.PathLike, lines: list[dict]) -> None:
    """Write tuple dicts as JSONL atomically (write aside, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    os.replace(tmp, path)


def epoch_order(num_tuples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_tuples)


def batch_indices(num_tuples: int, batch_size: int, seed: int, batch_number: int) -> np.ndarray:
    """Tuple indices [batch_size] of global batch `batch_number`, epochs reshuffled by seed.

    Resuming needs nothing but the number of batches already consumed. Batches never span two
    epochs: the last incomplete batch of an epoch is dropped so every batch has a fixed shape.
    """
    if batch_size > num_tuples:
        raise InputError(f"batch size {batch_size} exceeds the {num_tuples} training tuples")
    per_epoch = num_tuples // batch_size
    epoch, within = divmod(batch_number, per_epoch)
    order = epoch_order(num_tuples, seed, epoch)
    return order[within * batch_size : (within + 1) * batch_size]
