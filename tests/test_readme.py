"""The README's Python example runs as written (its BEIR folder swapped for a tiny one), using
only the public API."""

import re
from pathlib import Path

from tests.synthetic import write_beir

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    assert "lateint_jax." not in block.replace("import lateint_jax as lj", ""), "public API only"
    beir = write_beir(
        tmp_path / "beir",
        corpus=[{"_id": "d1", "text": "bees"}, {"_id": "d2", "text": "bread"}],
        queries=[{"_id": "q1", "text": "where do bees find flowers?"}],
        qrels=[("q1", "d1", 1)],
    )
    code = block.replace('"../shared/data/scifact"', repr(str(beir)))
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)  # noqa: S102 (the README, as a user runs it)
    assert names["hits"][0][0][0] == "d1"
    assert names["metrics"]["ndcg@10"] == 1.0
    assert (tmp_path / "indexes" / "demo" / "metadata.json").exists()
