"""Read a BEIR dataset through the tensorflow-datasets `beir` builder (`pip install
lateint-jax[tfds]`), e.g. `load_tfds_beir("scifact", data_dir=...)`.

The builder (tensorflow_datasets/datasets/beir) has configs named after the BEIR datasets
(`beir/scifact`, `beir/nfcorpus`, ...) and splits `passage` (passage_id, passage,
passage_metadata JSON holding the title), `query` (query_id, query) and one split per qrels file
(`train`, `validation`, `test`: query_id, passage_id, score). Preparing it downloads the data
and runs an Apache Beam pipeline, so this reader only uses an already prepared builder folder
unless download=True.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from lateint_jax.data.beir import BeirDataset, Corpus, qrels_score
from lateint_jax.errors import InputError


def _tfds():
    try:
        import tensorflow_datasets as tfds  # optional (the tfds extra) and slow to import
    except ImportError:
        raise InputError(
            "reading BEIR through tensorflow-datasets needs the tfds extra: "
            "pip install 'lateint-jax[tfds]' (or read a BEIR folder with lateint_jax.data.beir)"
        ) from None
    return tfds


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def records_to_beir(
    passages: Iterable[dict], queries: Iterable[dict], judgements: Iterable[dict]
) -> BeirDataset:
    """Build a BeirDataset from the builder's records (numpy values, strings as bytes)."""
    ids, titles, bodies = [], [], []
    for record in passages:
        metadata = json.loads(_text(record.get("passage_metadata", b"{}")) or "{}")
        ids.append(_text(record["passage_id"]))
        titles.append(str(metadata.get("title") or ""))
        bodies.append(_text(record["passage"]))
    all_queries = {_text(r["query_id"]): _text(r["query"]) for r in queries}
    qrels: dict[str, dict[str, int]] = {}
    for number, record in enumerate(judgements, 1):
        query_id, doc_id = _text(record["query_id"]), _text(record["passage_id"])
        score = qrels_score(record["score"], f"judgement {number} of the tfds split")
        qrels.setdefault(query_id, {})[doc_id] = score
    if not ids:
        raise InputError("the tfds beir builder returned no passages")
    if not qrels:
        raise InputError("the tfds beir builder returned no judgements for this split")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise InputError(f"{len(missing)} judged queries are missing from the query split")
    corpus = Corpus(ids, titles, bodies)
    return BeirDataset(corpus, {q: all_queries[q] for q in qrels}, qrels)


def load_tfds_beir(
    name: str = "scifact", split: str = "test", data_dir=None, download: bool = False
) -> BeirDataset:
    """The `beir/<name>` tfds builder -> corpus, the queries judged in `split`, their qrels.
    data_dir is the tfds data folder; download=True prepares the builder (needs internet)."""
    tfds = _tfds()
    not_found = getattr(tfds.core, "DatasetNotFoundError", KeyError)
    try:
        builder = tfds.builder(f"beir/{name}", data_dir=data_dir)
    except (not_found, ValueError) as err:  # unknown dataset / unknown config
        raise InputError(f"tensorflow-datasets has no builder beir/{name}: {err}") from None
    if download:
        builder.download_and_prepare()
    elif not builder.is_prepared():
        raise InputError(
            f"beir/{name} is not prepared under {builder.data_dir}; pass download=True "
            "(needs internet) or point data_dir at a prepared copy"
        )
    if split not in builder.info.splits:
        raise InputError(f"beir/{name} has no split {split!r} (has {sorted(builder.info.splits)})")

    def records(which):
        return tfds.as_numpy(builder.as_dataset(split=which))

    return records_to_beir(records("passage"), records("query"), records(split))
