"""Tiny CPU smoke run: a 2-layer width-32 random BERT (packaged tokenizer), KL distillation on
48 synthetic tuples; seconds on a laptop. Used by the tests and the notebook's tiny mode.

    python train.py --config configs/tiny_cpu.py output_dir=runs/tiny
    lateint index corpus.jsonl indexes/tiny --model runs/tiny/model_pylate   # its exported model
"""

from pathlib import Path

from lateint_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        task="colbert",
        tiny_model=True,
        loss="distill",
        nway=4,
        query_maxlen=16,
        doc_maxlen=32,
        dim=16,
        train_tuples=str(Path(__file__).with_name("tiny_tuples.jsonl")),
        batch_size=8,
        num_steps=8,
        learning_rate=1e-3,
        warmup_steps=2,
        checkpoint_every=4,
        keep_checkpoints=2,
        log_every=2,
        export_layouts=("pylate",),  # runs/tiny/model_pylate loads with --model
        output_dir="runs/tiny",
    )
