"""Sentence-BERT bi-encoder baseline: multiple-negatives ranking loss (in-batch + hard
negatives) from all-MiniLM-L6-v2. `loss=triplet nway=2` gives SBERT's triplet objective.

    python train.py --config configs/sbert_biencoder.py \
        train_tuples=runs/scifact/bm25_train.jsonl beir_folder=../shared/data/scifact
"""

from lateint_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        task="bi_encoder",
        loss="mnrl",
        nway=2,
        pair_maxlen=256,
        train_tuples="runs/scifact/bm25_train.jsonl",
        beir_folder="../shared/data/scifact",
        batch_size=32,
        num_steps=300,
        learning_rate=2e-5,
        warmup_steps=30,
        export_layouts=("sentence_transformers",),
        output_dir="runs/sbert",
    )
