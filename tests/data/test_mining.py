"""Hard-negative mining (BM25 and exact MaxSim first stages, positives removed) and teacher
scoring written into the tuples, through the `lateint mine` / `lateint teacher` commands."""

import json
from pathlib import Path

import jax
import numpy as np

from lateint_jax.cli import main as lateint
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.data import beir, mining, tuples
from lateint_jax.encoders import ColBERT, CrossEncoder, load_tokenizer
from lateint_jax.models.bert import init_bert_params, tiny_bert_config
from lateint_jax.models.cross_encoder import init_head

CORPUS = {
    "a": "insulin lowers blood glucose in diabetes",
    "b": "insulin resistance and diabetes risk",
    "c": "coffee consumption and sleep quality",
    "d": "malaria vaccine trial in children",
    "e": "sleep deprivation impairs memory",
    "f": "glucose monitoring devices for diabetes",
}
QUERIES = {"q1": "does insulin treat diabetes", "q2": "does coffee harm sleep"}
QRELS = {"q1": {"a": 1}, "q2": {"c": 1, "e": 1}}


def read_jsonl(path) -> list:
    return [value for _, value in beir.read_json_lines(path)]


def test_mined_tuples_exclude_every_judged_document():
    rankings = mining.bm25_rankings(CORPUS, QUERIES, depth=6)
    assert rankings["q1"][0] in {"a", "b", "f"}
    lines = mining.mine_tuples(rankings, QRELS, num_negatives=3)
    assert [(x["qid"], x["pos_id"]) for x in lines] == [("q1", "a"), ("q2", "c"), ("q2", "e")]
    for line in lines:
        assert len(line["neg_ids"]) == 3
        assert not set(line["neg_ids"]) & set(QRELS[line["qid"]])
    assert mining.mine_tuples(rankings, QRELS, num_negatives=5)[0]["qid"] == "q1"
    assert all(x["qid"] != "q2" for x in mining.mine_tuples(rankings, QRELS, num_negatives=5))


def test_exact_maxsim_first_stage_ranks_by_maxsim():
    model = ColBERT.from_pretrained(None, doc_maxlen=32)
    run = mining.colbert_run(model, CORPUS, QUERIES, depth=6)
    q = model.encode_queries([QUERIES["q1"]])
    docs = model.encode_documents(list(CORPUS.values()))
    direct = {d: float(np.einsum("qd,td->qt", q[0], v).max(1).sum()) for d, v in zip(CORPUS, docs)}
    np.testing.assert_allclose([run["q1"][d] for d in CORPUS], list(direct.values()), rtol=1e-4)
    ranked = mining.colbert_rankings(model, CORPUS, QUERIES, depth=3)
    assert ranked["q1"] == sorted(direct, key=direct.get, reverse=True)[:3]


def test_mine_command_on_scifact(scifact_dir, tmp_path):
    out = tmp_path / "mined.jsonl"
    assert lateint(["mine", str(scifact_dir), str(out), "--negatives", "7", "--depth", "20"]) == 0
    qrels = beir.load_qrels(scifact_dir, "train")
    lines = read_jsonl(out)
    assert len(lines) == sum(len(v) for v in qrels.values())
    for line in lines:
        assert line["pos_id"] in qrels[line["qid"]]
        assert len(line["neg_ids"]) == 7 and not set(line["neg_ids"]) & set(qrels[line["qid"]])
    corpus, queries = tuples.beir_texts(scifact_dir)
    read = tuples.read_tuples(out, 8, corpus=corpus, queries=queries)
    assert len(read) == len(lines)


def test_teacher_command_writes_cross_encoder_scores(tmp_path):
    ckpt = load_checkpoint(None)
    config = tiny_bert_config(ckpt.bert_config.vocab_size)
    params = {
        "bert": init_bert_params(config, jax.random.key(0)),
        "head": init_head(config, jax.random.key(1)),
    }
    CrossEncoder(params, config, load_tokenizer(ckpt), 64).save_pretrained(tmp_path / "ce")
    source = tmp_path / "in.jsonl"
    tuples.write_tuples(
        source,
        [
            {"query": "q one", "positive": "p", "negatives": ["n1", "n2", "n3"]},
            {"query": "q two", "positive": "p2", "negatives": ["m1", "m2", "m3"]},
        ],
    )
    out = tmp_path / "scored.jsonl"
    args = ["teacher", str(source), str(out), "--model", str(tmp_path / "ce"), "--nway", "3"]
    assert lateint(args) == 0
    lines = read_jsonl(out)
    assert lines[0]["negatives"] == ["n1", "n2"]
    model = CrossEncoder.from_pretrained(tmp_path / "ce")
    expected = model.score(["q one"] * 3, ["p", "n1", "n2"])
    np.testing.assert_allclose(lines[0]["scores"], expected, atol=1e-3)
    got = tuples.read_tuples(out, 3, require_scores=True)
    assert len(got) == 2 and len(got[1].scores) == 3


def test_teacher_command_bad_input(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"query": "q", "positive": "p", "negatives": ["n"]}\nnot json\n')
    assert lateint(["teacher", str(source), str(tmp_path / "o"), "--model", "x"]) == 2
    assert "in.jsonl:1: has 2 documents" in capsys.readouterr().err
    assert lateint(["mine", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "without corpus.jsonl" in capsys.readouterr().err
    assert Path(tmp_path / "o").exists() is False


def test_title_pseudo_queries_from_a_corpus_alone(tmp_path, capsys):
    # U+2028 and U+0085 are written as themselves: they must not end a line
    titled = {
        "a": ("Insulin and\u2028diabetes", "insulin lowers blood glucose in diabetes"),
        "b": ("Diabetes risk", "insulin resistance\x85and diabetes risk"),
        "c": ("Coffee and sleep", "coffee consumption and sleep\u2028quality"),
        "d": ("", "malaria vaccine trial in children"),
        "e": ("Sleep loss", "sleep deprivation impairs memory"),
    }
    (tmp_path / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": d, "title": title, "text": text}, ensure_ascii=False) + "\n"
            for d, (title, text) in titled.items()
        ),
        encoding="utf-8",
    )
    out = tmp_path / "titles.jsonl"
    args = [str(tmp_path), str(out), "--title-queries", "4", "--negatives", "2", "--depth", "5"]
    assert lateint(["mine", *args]) == 0
    lines = read_jsonl(out)
    assert sorted(line["pos_id"] for line in lines) == ["a", "b", "c", "e"]  # "d" has no title
    for line in lines:
        title, body = titled[line["pos_id"]]
        assert (line["query"], line["positive"]) == (title, body)
        assert line["pos_id"] not in line["neg_ids"] and len(line["neg_ids"]) == 2
        assert line["negatives"] == [titled[d][1] for d in line["neg_ids"]]
    read = tuples.read_tuples(out, 3)
    assert read[0].documents[0] == titled[lines[0]["pos_id"]][1]
    assert lateint(["mine", *args[:2], "--title-queries", "5"]) == 2
    assert "only 4 passages with both a title and a text" in capsys.readouterr().err
    assert lateint(["mine", *args[:2], "--title-queries", "-1"]) == 2
    assert "--title-queries must be >= 0" in capsys.readouterr().err


def test_mine_command_reads_separators_inside_json_strings(tmp_path):
    corpus = {d: text.replace(" ", "\u2028", 1) for d, text in CORPUS.items()}
    queries = {"q1": "does insulin\x85treat diabetes", "q2": "does coffee\u2029harm sleep"}
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    for name, table in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        rows = [json.dumps({"_id": k, "text": v}, ensure_ascii=False) for k, v in table.items()]
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    judged = [f"{q}\t{d}\t{rel}" for q, docs in QRELS.items() for d, rel in docs.items()]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(judged))
    out = tmp_path / "mined.jsonl"
    assert lateint(["mine", str(folder), str(out), "--negatives", "3", "--depth", "6"]) == 0
    want = mining.mine_tuples(mining.bm25_rankings(corpus, queries, 6), QRELS, 3)
    assert read_jsonl(out) == want
