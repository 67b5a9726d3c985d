"""`lateint convert SRC DST --to hf|stanford|pylate|sentence-transformers|cross-encoder`.

SRC is any layout `lateint_jax.convert.load` reads (local dir or hub name); DST is written
atomically, never over SRC, and replaces (with --overwrite) only a checkpoint. `--kind` picks the
model SRC is read as; by default it follows `--to` (stanford/pylate: colbert,
sentence-transformers: biencoder, cross-encoder: cross-encoder, hf: the BERT backbone alone).
"""

from __future__ import annotations

import dataclasses
import sys

from lateint_jax.convert.export import export_hf
from lateint_jax.convert.files import DEFAULT_NAMES, is_checkpoint_folder
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import BiEncoder, ColBERT, CrossEncoder, load_tokenizer
from lateint_jax.errors import InputError
from lateint_jax.models.colbert import ColBERTConfig
from lateint_jax.outputs import check_target, refuse_overlap

TARGETS = ("hf", "stanford", "pylate", "sentence-transformers", "cross-encoder")
KIND_OF_TARGET = {
    "stanford": "colbert",
    "pylate": "colbert",
    "sentence-transformers": "biencoder",
    "cross-encoder": "cross-encoder",
}


def configure(parser) -> None:
    parser.add_argument("src", help="checkpoint dir or hub name ('default' = packaged MiniLM)")
    parser.add_argument("dst", help="directory to write (never SRC, inside it, or around it)")
    parser.add_argument("--to", choices=TARGETS, required=True, help="layout to write")
    parser.add_argument(
        "--kind",
        choices=["colbert", "biencoder", "cross-encoder"],
        default=None,
        help="read SRC as this model (default: follows --to)",
    )
    parser.add_argument("--dim", type=int, default=None, help="ColBERT dim for a new projection")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DST if it is a checkpoint (nothing else is ever replaced)",
    )


def _check_output(args) -> None:
    """Refuse a DST that overlaps a local SRC, or that exists and may not be replaced
    (outputs.check_target); before SRC is loaded."""
    src = None if args.src in DEFAULT_NAMES else args.src
    refuse_overlap(args.dst, [src], what="destination")
    check_target(args.dst, args.overwrite, is_checkpoint_folder, "checkpoint")


def run(args) -> int:
    kind = args.kind or KIND_OF_TARGET.get(args.to)
    if args.to in KIND_OF_TARGET and kind != KIND_OF_TARGET[args.to]:
        raise InputError(f"--to {args.to} writes a {KIND_OF_TARGET[args.to]}, not a {kind}")
    _check_output(args)
    if args.to == "hf" and kind is None:
        ckpt = load_checkpoint(args.src)
        export_hf(ckpt.bert, ckpt.bert_config, load_tokenizer(ckpt), args.dst, args.overwrite)
    elif kind == "colbert":
        extra = {"dim": args.dim} if args.dim else {}
        model = ColBERT.from_pretrained(args.src, **extra)
        if args.to == "stanford":
            model = _with_colbert_ai_conventions(model)
        _save(model, args, layout=args.to)
    elif kind == "biencoder":
        _save(BiEncoder.from_pretrained(args.src), args)
    else:
        _save(CrossEncoder.from_pretrained(args.src), args)
    print(f"wrote {args.to} checkpoint to {args.dst}")
    return 0


def _with_colbert_ai_conventions(model: ColBERT) -> ColBERT:
    """colbert-ai's layout always has [Q]/[D] markers and [MASK] query augmentation: a model
    loaded without them (a checkpoint with no ColBERT head, see `untrained_settings`) is
    written with colbert-ai's, untrained, and a note says so."""
    cfg, colbert_ai = model.config, ColBERTConfig()
    changes = {
        name: getattr(colbert_ai, name)
        for name in ("query_token", "doc_token")
        if getattr(cfg, name) == ""
    }
    if not cfg.query_augmentation:
        changes["query_augmentation"] = True
    if not changes:
        return model
    print(
        f"note: colbert-ai checkpoints always have markers and [MASK] query augmentation; "
        f"writing {', '.join(sorted(changes))} as colbert-ai's (untrained)",
        file=sys.stderr,
    )
    config = dataclasses.replace(cfg, **changes)
    return ColBERT(
        model.params,
        model.bert_config,
        config,
        model.tokenizer,
        model.model_name,
        model.compute_dtype,
        model.head,
    )


def _save(model, args, layout=None) -> None:
    if args.to == "hf":
        bert = model.params.get("bert", model.params)
        export_hf(bert, model.bert_config, model.tokenizer, args.dst, args.overwrite)
    elif layout is not None:
        model.save_pretrained(args.dst, layout=layout, overwrite=args.overwrite)
    else:
        model.save_pretrained(args.dst, overwrite=args.overwrite)
