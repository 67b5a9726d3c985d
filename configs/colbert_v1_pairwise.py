"""ColBERT v1: pairwise softmax cross-entropy over (query, positive, negative) triples with
in-batch negatives off, from all-MiniLM-L6-v2 + a 128-d projection.

    python train.py --config configs/colbert_v1_pairwise.py \
        train_tuples=runs/scifact/bm25_train.jsonl beir_folder=../shared/data/scifact
"""

from lateint_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        task="colbert",
        loss="pairwise",
        nway=2,
        doc_maxlen=180,
        train_tuples="runs/scifact/bm25_train.jsonl",
        beir_folder="../shared/data/scifact",
        batch_size=32,
        num_steps=400,
        learning_rate=3e-6,
        warmup_steps=40,
        export_layouts=("stanford",),
        output_dir="runs/colbert_v1",
    )
