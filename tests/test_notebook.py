"""colab/train_tpu.ipynb runs top to bottom on CPU in its tiny mode (nbclient), so it cannot rot."""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_notebook_runs_tiny(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("LATEINT_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("LATEINT_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(REPO / "colab" / "train_tpu.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    records = [
        json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()
    ]
    assert records[-1]["step"] == 8
    printed = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "devices:" in printed and "step 8 loss" in printed
