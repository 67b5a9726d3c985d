"""SciFact test quality of trained ColBERT students (step 4 of the recipe in docs/TRAINING.md):
for each training run directory, a PLAID index of the corpus from its exported model (built once,
kept in RUN_DIR/index), `lateint evaluate` over it, and the mean over the runs.

    python benchmarks/scifact_recipe.py seed0=runs/scifact/student_ce_2x_titles \
        seed1=runs/scifact/student_ce_2x_titles_seed1 [--json OUT]

Prints a table and writes JSON (benchmarks/results/scifact_recipe.json) naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from serve_load import DATA, REPO, machine
from serve_quality import evaluate_cli

RESULTS = REPO / "benchmarks" / "results" / "scifact_recipe.json"
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def ensure_student_index(run_dir: Path, data: Path) -> Path:
    index = run_dir / "index"
    if (index / "metadata.json").exists():
        return index
    model = run_dir / "model_pylate"
    if not model.exists():
        raise SystemExit(f"{run_dir}: no model_pylate (train with export_layouts including pylate)")
    command = [sys.executable, "-m", "lateint_jax.cli", "index", str(data), str(index)]
    command += ["--model", str(model)]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--data", type=Path, default=DATA.resolve(), help="the SciFact BEIR folder")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for item in args.runs:
        label, sep, run_dir = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not LABEL=RUN_DIR")
        run_dir = Path(run_dir).resolve()
        config = json.loads((run_dir / "config.json").read_text())
        started = time.perf_counter()
        index = ensure_student_index(run_dir, args.data)
        metrics = evaluate_cli(index, args.data, k=100)
        row = {"label": label, "run_dir": str(run_dir), **{m: metrics[m] for m in METRICS}}
        row.update(seed=config["seed"], loss=config["loss"], num_steps=config["num_steps"])
        row["train_tuples"] = config["train_tuples"]
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
    mean = {m: sum(r[m] for r in rows) / len(rows) for m in METRICS}
    print(f"{'run':<12}{'seed':>6}{'steps':>7}" + "".join(f"{m:>12}" for m in METRICS))
    for r in rows:
        print(
            f"{r['label']:<12}{r['seed']:>6}{r['num_steps']:>7}"
            + "".join(f"{r[m]:>12.4f}" for m in METRICS)
        )
    print(f"{'mean':<25}" + "".join(f"{mean[m]:>12.4f}" for m in METRICS))
    results = {"machine": machine(), "split": "test", "runs": rows, "mean": mean}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
