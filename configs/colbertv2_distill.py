"""ColBERTv2-style distillation of a ColBERT student (from all-MiniLM-L6-v2 + a 128-d projection)
with KL against cross-encoder scores over n-way tuples, plus n-way CE against every document of
the batch (in-batch negatives, as ColBERTv2): step 3 of docs/TRAINING.md.

    python train.py --config configs/colbertv2_distill.py beir_folder=../shared/data/scifact

The tuples are SciFact's 919 mined train tuples plus 2000 title pseudo-queries from the corpus,
all scored by the teacher. The same student without distillation (the better one here, with our
weak teacher): add `loss=nway_ce train_tuples=runs/scifact/train_plus_titles.jsonl
output_dir=runs/scifact/student_ce_titles` (the same batches, without teacher scores); with the
train tuples seen twice, that is configs/colbert_scifact.py (0.768 and 0.745 over two seeds).
For the tiny CPU variant see configs/tiny_cpu.py (same task and loss, random 2-layer model).
"""

from lateint_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        task="colbert",
        model=None,  # the packaged all-MiniLM-L6-v2 (a hub name or a local dir works too)
        loss="distill",
        in_batch_negatives=True,
        teacher_temperature=1.0,
        distill_alpha=1.0,
        nway=4,
        query_maxlen=32,
        doc_maxlen=180,
        dim=128,
        train_tuples="runs/scifact/teacher_train_plus_titles.jsonl",
        beir_folder="../shared/data/scifact",
        batch_size=8,
        num_steps=365,  # one epoch of the 2919 tuples
        learning_rate=5e-5,
        warmup_steps=20,
        checkpoint_every=100,
        log_every=5,
        export_layouts=("pylate", "stanford"),
        output_dir="runs/scifact/student_kl_titles",
    )
