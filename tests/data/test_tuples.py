"""The n-way tuples format: texts or ids, teacher scores, clear errors, deterministic batches."""

import json

import numpy as np
import pytest

from lateint_jax.data import tuples
from lateint_jax.errors import InputError

CORPUS = {"d1": "alpha doc", "d2": "beta doc", "d3": "gamma doc", "d4": "delta doc"}
QUERIES = {"q1": "what is alpha"}


def write(tmp_path, lines, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_texts_and_ids_resolve_positive_first(tmp_path):
    path = write(
        tmp_path,
        [
            {"query": "q text", "positive": "p", "negatives": ["n1", "n2", "n3"]},
            {"qid": "q1", "pos_id": "d1", "neg_ids": ["d2", "d3"], "scores": [3, 1, 0]},
        ],
    )
    got = tuples.read_tuples(path, 3, corpus=CORPUS, queries=QUERIES)
    assert got[0] == tuples.TrainingTuple("q text", ("p", "n1", "n2"), None)
    assert got[1] == tuples.TrainingTuple(
        "what is alpha", ("alpha doc", "beta doc", "gamma doc"), (3.0, 1.0, 0.0)
    )


def test_malformed_line_names_its_number(tmp_path):
    path = write(tmp_path, [{"query": "q", "positive": "p", "negatives": ["n"]}, "{not json"])
    with pytest.raises(InputError, match=r"t\.jsonl:2: not valid JSON"):
        tuples.read_tuples(path, 2)


@pytest.mark.parametrize(
    "line, message",
    [
        ({"positive": "p", "negatives": ["n"]}, "needs 'query'"),
        ({"query": "q", "negatives": ["n"]}, "needs 'positive'"),
        ({"query": "q", "positive": "p"}, "needs a 'negatives'"),
        ({"query": "q", "positive": "p", "negatives": [1]}, "list of texts"),
        ({"query": "q", "pos_id": "nope", "negatives": ["n"]}, "pos_id 'nope' is not in"),
        ({"query": "q", "positive": "p", "neg_ids": ["d1", "x"]}, r"neg_ids \['x'\]"),
        (["a list"], "must be a JSON object"),
        ({"query": "q", "positive": "p", "negatives": ["n"], "scores": [1]}, "one teacher score"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, message):
    path = write(tmp_path, [{"query": "q", "positive": "p", "negatives": ["n"]}, line])
    with pytest.raises(InputError, match=message) as err:
        tuples.read_tuples(path, 2, corpus=CORPUS)
    assert "t.jsonl:2" in str(err.value)


def test_nway_larger_than_the_tuple_is_an_error(tmp_path):
    path = write(tmp_path, [{"query": "q", "positive": "p", "negatives": ["n1", "n2"]}])
    with pytest.raises(InputError, match="has 3 documents .* nway=8"):
        tuples.read_tuples(path, 8)


def test_missing_teacher_scores_with_distillation(tmp_path):
    path = write(tmp_path, [{"query": "q", "positive": "p", "negatives": ["n1"]}])
    assert tuples.read_tuples(path, 2)[0].scores is None
    with pytest.raises(InputError, match="no teacher 'scores' but distillation is on"):
        tuples.read_tuples(path, 2, require_scores=True)


def test_ids_without_a_corpus_and_missing_file(tmp_path):
    path = write(tmp_path, [{"query": "q", "pos_id": "d1", "negatives": ["n"]}])
    with pytest.raises(InputError, match="no corpus to resolve"):
        tuples.read_tuples(path, 2)
    with pytest.raises(InputError, match="not found"):
        tuples.read_tuples(tmp_path / "absent.jsonl", 2)


def test_write_is_atomic_and_round_trips(tmp_path):
    lines = [{"query": "q", "positive": "p", "negatives": ["n"], "scores": [1.5, -2.0]}]
    tuples.write_tuples(tmp_path / "out.jsonl", lines)
    assert not list(tmp_path.glob("*.tmp"))
    assert tuples.read_tuples(tmp_path / "out.jsonl", 2)[0].scores == (1.5, -2.0)


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_number():
    n, size = 23, 5
    per_epoch = n // size
    first = np.concatenate([tuples.batch_indices(n, size, 7, b) for b in range(per_epoch)])
    assert len(set(first.tolist())) == len(first) == per_epoch * size
    again = tuples.batch_indices(n, size, 7, 2)
    np.testing.assert_array_equal(again, first[10:15])  # resumable from the batch number alone
    second = tuples.batch_indices(n, size, 7, per_epoch)  # next epoch: reshuffled
    assert not np.array_equal(second, first[:size])
    assert not np.array_equal(tuples.batch_indices(n, size, 8, 0), first[:size])
    with pytest.raises(InputError, match="exceeds"):
        tuples.batch_indices(3, 5, 0, 0)


def test_ids_resolve_against_a_beir_folder(scifact_dir):
    corpus, queries = tuples.beir_texts(scifact_dir)
    assert len(corpus) == 5183 and len(queries) == 1109
    assert corpus["4983"].startswith("Microstructural development of human newborn")
    with pytest.raises(InputError, match="without corpus.jsonl"):
        tuples.beir_texts(scifact_dir / "qrels")


def test_texts_holding_line_separators_stay_one_tuple(tmp_path):
    line = {"query": "q\u2028one", "positive": "p\x85two", "negatives": ["n\u2029three"]}
    tuples.write_tuples(tmp_path / "t.jsonl", [line, line])
    assert "\u2028" in (tmp_path / "t.jsonl").read_text(encoding="utf-8")
    got = tuples.read_tuples(tmp_path / "t.jsonl", 2)
    assert got == [tuples.TrainingTuple("q\u2028one", ("p\x85two", "n\u2029three"), None)] * 2
    with open(tmp_path / "t.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match=r"t\.jsonl:3: not valid JSON"):
        tuples.read_tuples(tmp_path / "t.jsonl", 2)
