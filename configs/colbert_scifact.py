"""The SciFact ColBERT recipe (nDCG@10 0.768 and 0.745 with seeds 0 and 1 on this CPU): a
student from all-MiniLM-L6-v2 + a 128-d projection, n-way CE (positive + 3 BM25 negatives) plus
CE against every document of the batch, over two passes of SciFact's 919 train tuples and 2000
title pseudo-queries (docs/TRAINING.md, "The ColBERTv2 recipe on SciFact"):

    D=../shared/data/scifact
    lateint mine $D runs/scifact/bm25_train.jsonl --first-stage bm25 --negatives 31
    lateint mine $D runs/scifact/title_pseudo.jsonl --title-queries 2000 --negatives 31
    cat runs/scifact/bm25_train.jsonl runs/scifact/bm25_train.jsonl runs/scifact/title_pseudo.jsonl \
        > runs/scifact/train2x_plus_titles.jsonl
    python train.py --config configs/colbert_scifact.py beir_folder=$D

The train tuples are listed twice, so one shuffled epoch shows each of them twice and each title
once. The same student with KL distillation is configs/colbertv2_distill.py.
"""

import dataclasses
from pathlib import Path

from lateint_jax.training.config import TrainConfig, load_config


def get_config() -> TrainConfig:
    distill = load_config(Path(__file__).with_name("colbertv2_distill.py"))
    return dataclasses.replace(
        distill,
        loss="nway_ce",  # positive + 3 BM25 negatives; in_batch_negatives stays on
        train_tuples="runs/scifact/train2x_plus_titles.jsonl",
        num_steps=480,  # one epoch of the 3838 tuples (2 x 919 + 2000), batch 8
        output_dir="runs/scifact/student_ce_2x_titles",
    )
