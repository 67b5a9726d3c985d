"""The training config: one frozen dataclass, built by `configs/*.py` and overridable from the
command line with `key=value` strings."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lateint_jax.errors import InputError

TASKS = ("colbert", "cross_encoder", "bi_encoder")
LOSSES = {
    "colbert": ("pairwise", "nway_ce", "distill"),
    "cross_encoder": ("nway_ce", "bce"),
    "bi_encoder": ("mnrl", "triplet"),
}
# What export_layouts may name per task (the cross-encoder and bi-encoder have one layout each).
EXPORT_LAYOUTS = {
    "colbert": ("pylate", "stanford"),
    "cross_encoder": ("hf",),
    "bi_encoder": ("sentence_transformers",),
}


@dataclass(frozen=True)
class TrainConfig:
    # What is trained, from what.
    task: str = "colbert"
    model: str | None = None  # hub name or local dir; None = the packaged all-MiniLM-L6-v2
    tiny_model: bool = False  # a tiny random BERT with the packaged tokenizer (tests, smoke runs)
    loss: str = "distill"
    in_batch_negatives: bool = False  # ColBERT: add n-way CE against every document of the batch
    nway: int = 8  # documents per tuple: the positive + (nway - 1) negatives
    teacher_temperature: float = 1.0
    distill_alpha: float = 1.0  # weight of KL vs the hard-label CE (1 = pure KL, ColBERTv2)
    triplet_margin: float = 1.0
    mnrl_scale: float = 20.0
    query_maxlen: int = 32
    doc_maxlen: int = 180
    pair_maxlen: int = 256  # cross-encoder (query, passage) length; bi-encoder text length
    dim: int = 128
    # Data.
    train_tuples: str = ""
    beir_folder: str | None = None  # resolves qid/pos_id/neg_ids; None = tuples hold texts
    # Optimisation.
    batch_size: int = 32  # global, across all devices and accumulation steps
    accum_steps: int = 1
    num_steps: int = 1000
    learning_rate: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    compute_dtype: str = "float32"  # or "bfloat16"
    seed: int = 0
    num_devices: int | None = None  # None = every device
    # Output.
    output_dir: str = "runs/train"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    export_layouts: tuple[str, ...] = ("pylate",)  # final model(s), from EXPORT_LAYOUTS[task]
    halt_after_steps: int | None = None  # stop this process after that many steps (tests)

    def validate(self) -> TrainConfig:
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.loss not in LOSSES[self.task]:
            raise InputError(f"loss for task {self.task!r} must be one of {LOSSES[self.task]}")
        if self.loss == "pairwise" and self.nway != 2:
            raise InputError(f"the pairwise loss needs nway=2, got nway={self.nway}")
        if self.nway < 2:
            raise InputError(f"nway must be >= 2, got {self.nway}")
        if self.batch_size % self.accum_steps:
            raise InputError(f"batch_size {self.batch_size} is not a multiple of accum_steps")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise InputError(f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype}")
        if not self.train_tuples:
            raise InputError("train_tuples is empty: set train_tuples=PATH")
        if self.num_steps < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise InputError("num_steps, checkpoint_every and log_every must be >= 1")
        unknown = [x for x in self.export_layouts if x not in EXPORT_LAYOUTS[self.task]]
        if unknown:
            raise InputError(
                f"export_layouts {unknown} unknown for task {self.task!r} "
                f"(expected some of {EXPORT_LAYOUTS[self.task]})"
            )
        return self

    @property
    def uses_teacher(self) -> bool:
        return self.task == "colbert" and self.loss == "distill"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Import a configs/*.py file and call its get_config()."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_lateint_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise InputError(f"{path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, TrainConfig):
        raise InputError(f"{path}: get_config() must return a TrainConfig")
    return config


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`key=value` strings onto the config, each value parsed as the field's type."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"override {item!r} is not key=value")
        if key not in types:
            raise InputError(f"unknown config key {key!r} (known: {', '.join(sorted(types))})")
        changes[key] = _parse(key, types[key], raw)
    return dataclasses.replace(config, **changes)


def _parse(key: str, kind: str, raw: str):
    optional = "None" in kind
    if optional and raw.lower() in ("none", "null", ""):
        return None
    try:
        if kind.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(x for x in raw.split(",") if x)
    except ValueError:
        raise InputError(f"{key}={raw!r}: expected {kind}") from None
    return raw
