"""Examples/s of one ColBERT KL-distillation training step: ours (JAX, jitted data-parallel step)
against PyLate's (PyTorch: `pylate.models.ColBERT` + `pylate.losses.Distillation` + AdamW) on
the same model (the packaged all-MiniLM-L6-v2 + a 128-d projection), batch, n-way and lengths,
in one run, alternating rounds so machine noise hits both sides alike.

    python benchmarks/train_step.py [--batch 8 --nway 4 --doc-len 128 --rounds 2 --steps 3]

PyLate runs in its own venv (`--pylate-python`, default .bench-venvs/pylate/bin/python): its
fast-plaid dependency pins another torch, so it is installed there with --no-deps beside
torch 2.13.0+cpu. Texts are synthetic and longer than --doc-len, so every document is
truncated to the same length on both sides; tokenisation is done once, outside the timing.
Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

TORCH_SIDE = r"""
import json, sys, time, torch
from pylate import losses, models
cfg = json.loads(sys.argv[1])
torch.manual_seed(0)
model = models.ColBERT(cfg["model_dir"], embedding_size=cfg["dim"], query_length=cfg["query_len"],
                       document_length=cfg["doc_len"], device="cpu")
loss_fn = losses.Distillation(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
queries, docs = cfg["queries"], cfg["docs"]
features = [model.tokenize(queries, is_query=True), model.tokenize(docs, is_query=False)]
labels = torch.tensor(cfg["scores"], dtype=torch.float32)
doc_tokens = int(features[1]["input_ids"].shape[1])

def step():
    loss = loss_fn(features, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)

step()  # warm-up
for line in sys.stdin:  # one request per round: run N timed steps, answer with seconds
    n = int(line)
    start = time.perf_counter()
    for _ in range(n):
        step()
    print(json.dumps({"seconds": time.perf_counter() - start, "doc_tokens": doc_tokens}), flush=True)
"""


def synthetic_tuples(batch: int, nway: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [
        "cell",
        "protein",
        "gene",
        "patient",
        "trial",
        "dose",
        "risk",
        "tumor",
        "immune",
        "brain",
        "study",
        "level",
    ]

    def text(n):
        return " ".join(rng.choice(words, n))

    queries = [text(12) for _ in range(batch)]
    docs = [text(400) for _ in range(batch * nway)]  # longer than any --doc-len: truncated
    scores = rng.normal(size=(batch, nway)).astype(np.float32)
    return queries, docs, scores


def ours(args, queries, docs, scores):
    """A callable running N of our jitted steps, and the doc length used."""
    import jax

    from lateint_jax import sharding
    from lateint_jax.data.tuples import TrainingTuple
    from lateint_jax.training import step as step_lib
    from lateint_jax.training.config import TrainConfig
    from lateint_jax.training.state import create_state, learning_rate_schedule, make_optimizer
    from lateint_jax.training.tasks import build_task

    config = TrainConfig(
        task="colbert",
        loss="distill",
        nway=args.nway,
        query_maxlen=args.query_len,
        doc_maxlen=args.doc_len,
        batch_size=args.batch,
        compute_dtype=args.dtype,
        train_tuples="unused",
    )
    task = build_task(config, fixed_lengths=True)
    rows = [
        TrainingTuple(q, tuple(docs[i * args.nway : (i + 1) * args.nway]), tuple(scores[i]))
        for i, q in enumerate(queries)
    ]
    mesh = sharding.data_mesh(jax.devices(), explicit=False)
    schedule = learning_rate_schedule(1e-5, 10, 1000)
    optimizer = make_optimizer(schedule, 0.01, 1.0)
    state = step_lib.place_state(create_state(task.params, optimizer, 0), mesh)
    train_step = step_lib.make_train_step(task.loss_fn, optimizer, mesh, schedule=schedule)
    batch = step_lib.shard_batch(task.collate(rows), mesh)
    holder = {"state": train_step(state, batch)[0]}  # compile + warm-up
    jax.block_until_ready(holder["state"])

    def run(n):
        start = time.perf_counter()
        for _ in range(n):
            holder["state"], metrics = train_step(holder["state"], batch)
        jax.block_until_ready(metrics)
        return time.perf_counter() - start

    return run, int(batch["doc_input_ids"].shape[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nway", type=int, default=4)
    parser.add_argument("--query-len", type=int, default=32)
    parser.add_argument("--doc-len", type=int, default=128)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--pylate-python", default=str(REPO / ".bench-venvs/pylate/bin/python"))
    parser.add_argument("--out", default=str(HERE / "results" / "train_step.json"))
    args = parser.parse_args()

    from lateint_jax.convert.files import default_model_dir

    queries, docs, scores = synthetic_tuples(args.batch, args.nway)
    run_ours, our_len = ours(args, queries, docs, scores)
    cfg = {
        "model_dir": str(default_model_dir()),
        "dim": args.dim,
        "query_len": args.query_len,
        "doc_len": args.doc_len,
        "queries": queries,
        "docs": docs,
        "scores": scores.tolist(),
    }
    torch_proc = None
    if Path(args.pylate_python).exists():
        torch_proc = subprocess.Popen(
            [args.pylate_python, "-c", TORCH_SIDE, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    our_rates, their_rates, their_len = [], [], None
    for _ in range(args.rounds):
        our_rates.append(args.batch * args.steps / run_ours(args.steps))
        if torch_proc is not None:
            torch_proc.stdin.write(f"{args.steps}\n")
            torch_proc.stdin.flush()
            answer = json.loads(torch_proc.stdout.readline())
            their_rates.append(args.batch * args.steps / answer["seconds"])
            their_len = answer["doc_tokens"]
    if torch_proc is not None:
        torch_proc.stdin.close()
        torch_proc.wait(timeout=60)

    ours_eps = statistics.median(our_rates)
    theirs_eps = statistics.median(their_rates) if their_rates else None
    result = {
        "benchmark": "train_step (ColBERT KL distillation, forward + backward + AdamW)",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "model": "all-MiniLM-L6-v2 + 128-d projection",
        "batch": args.batch,
        "nway": args.nway,
        "query_len": args.query_len,
        "doc_len": {"ours": our_len, "pylate": their_len},
        "dtype": args.dtype,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "ours_examples_per_s": ours_eps,
        "pylate_examples_per_s": theirs_eps,
        "ratio_ours_over_pylate": (ours_eps / theirs_eps) if theirs_eps else None,
        "all_rounds": {"ours": our_rates, "pylate": their_rates},
    }
    print(f"{'side':<10}{'examples/s':>12}")
    print(f"{'ours':<10}{ours_eps:>12.3f}")
    if theirs_eps:
        print(f"{'pylate':<10}{theirs_eps:>12.3f}")
        print(f"ratio ours/pylate: {ours_eps / theirs_eps:.2f}  (machine: {result['machine']})")
    else:
        print(f"PyLate not found at {args.pylate_python}: only our side measured")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
