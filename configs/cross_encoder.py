"""Cross-encoder teacher for the SciFact recipe: all-MiniLM-L6-v2 (no pretrained cross-encoder
is available offline) plus a fresh classifier, n-way CE over BM25-mined tuples (docs/TRAINING.md).

    python train.py --config configs/cross_encoder.py \
        train_tuples=runs/scifact/bm25_train.jsonl beir_folder=../shared/data/scifact

`tiny=True` in get_config (or the tiny_cpu overrides) gives a seconds-long CPU variant.
"""

from lateint_jax.training.config import TrainConfig


def get_config(tiny: bool = False) -> TrainConfig:
    config = TrainConfig(
        task="cross_encoder",
        model=None,  # the packaged all-MiniLM-L6-v2
        loss="nway_ce",
        nway=4,
        pair_maxlen=128,
        train_tuples="runs/scifact/bm25_train.jsonl",
        beir_folder="../shared/data/scifact",
        batch_size=8,
        num_steps=100,  # ~0.9 epoch of the 919 SciFact train tuples
        learning_rate=7e-5,
        warmup_steps=10,
        checkpoint_every=50,
        log_every=10,
        export_layouts=("hf",),
        output_dir="runs/scifact/teacher",
    )
    if tiny:
        from dataclasses import replace

        config = replace(config, tiny_model=True, pair_maxlen=64, num_steps=4, batch_size=4)
    return config
