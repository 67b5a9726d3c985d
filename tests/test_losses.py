"""Losses: hand-worked examples, parity with the PyTorch reference losses on random inputs,
and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lateint_jax import losses, scoring

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_maxsim_worked_example():
    # 3 query tokens x 4 document tokens, 2-d. Row maxima by hand: 0.9 + 0.74 + 1.0 = 2.64.
    query = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], np.float32)
    doc = np.array([[[0.9, 0.1], [0.2, 0.74], [0.5, 0.5], [0.3, 0.3]]], np.float32)
    assert float(scoring.maxsim(query, doc)[0, 0]) == pytest.approx(2.64, abs=1e-6)


def test_pairwise_worked_example():
    # -log(e^2.64 / (e^2.64 + e^1.10)) = log(1 + e^-1.54)
    loss = losses.pairwise_softmax_cross_entropy(jnp.array([2.64]), jnp.array([1.10]))
    assert float(loss) == pytest.approx(np.log1p(np.exp(-1.54)), abs=1e-6)
    assert float(loss) == pytest.approx(0.195, abs=1e-3)


def test_kl_worked_example():
    teacher, student = np.array([[5.0, 2.0, 1.0]]), np.array([[3.0, 2.5, 2.0]])
    p = np.exp(teacher) / np.exp(teacher).sum()
    q = np.exp(student) / np.exp(student).sum()
    by_hand = float((p * np.log(p / q)).sum())
    loss = float(losses.kl_distillation(jnp.array(student), jnp.array(teacher)))
    assert loss == pytest.approx(by_hand, abs=1e-5)
    assert loss == pytest.approx(0.447, abs=1.5e-3)


def test_triplet_worked_example():
    u, v, w = jnp.array([[1.0, 0.0]]), jnp.array([[0.9, 0.1]]), jnp.array([[0.8, 0.2]])
    loss = float(losses.triplet_loss(u, v, w, margin=1.0))
    assert loss == pytest.approx(np.sqrt(0.02) - np.sqrt(0.08) + 1.0, abs=1e-6)
    assert loss == pytest.approx(0.858, abs=1e-3)


# Random-input tests take conftest's `rng` (seeded, the seed in any failure message). Parity with
# torch: both float32, so rtol 1e-5 (atol 1e-6 where a loss can be near 0).


def test_nway_and_in_batch_match_torch(rng):
    scores = rng.normal(size=(6, 8)).astype(np.float32) * 3
    expected = F.cross_entropy(torch.from_numpy(scores), torch.zeros(6, dtype=torch.long))
    np.testing.assert_allclose(losses.nway_cross_entropy(scores), expected.numpy(), rtol=1e-5)
    labels = rng.integers(0, 8, size=6)
    expected = F.cross_entropy(torch.from_numpy(scores), torch.from_numpy(labels))
    np.testing.assert_allclose(
        losses.in_batch_cross_entropy(scores, labels), expected.numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_kl_matches_torch_kl_div(rng, temperature):
    student = rng.normal(size=(5, 8)).astype(np.float32) * 4
    teacher = rng.normal(size=(5, 8)).astype(np.float32) * 4
    expected = F.kl_div(
        F.log_softmax(torch.from_numpy(student), -1),
        F.log_softmax(torch.from_numpy(teacher) / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    got = losses.kl_distillation(student, teacher, teacher_temperature=temperature)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_distillation_alpha_mixes_hard_label(rng):
    student = rng.normal(size=(4, 6)).astype(np.float32)
    teacher = rng.normal(size=(4, 6)).astype(np.float32)
    kl = losses.kl_distillation(student, teacher)
    ce = losses.nway_cross_entropy(student)
    got = losses.distillation_loss(student, teacher, alpha=0.25)
    np.testing.assert_allclose(got, 0.25 * kl + 0.75 * ce, rtol=1e-6)


def test_triplet_matches_torch(rng):
    a, p, n = (rng.normal(size=(7, 16)).astype(np.float32) for _ in range(3))
    expected = F.triplet_margin_loss(
        *(torch.from_numpy(x) for x in (a, p, n)), margin=1.0, p=2, eps=0.0
    )
    np.testing.assert_allclose(losses.triplet_loss(a, p, n), expected.numpy(), rtol=1e-5)


def test_mnrl_matches_sentence_transformers_definition(rng):
    anchors = rng.normal(size=(4, 16)).astype(np.float32)
    candidates = rng.normal(size=(9, 16)).astype(np.float32)  # 4 positives + 5 hard negatives
    a, c = torch.from_numpy(anchors), torch.from_numpy(candidates)
    cos = F.normalize(a, dim=-1) @ F.normalize(c, dim=-1).T
    expected = F.cross_entropy(cos * 20.0, torch.arange(4))
    got = losses.multiple_negatives_ranking_loss(anchors, candidates, scale=20.0)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


def test_bce_matches_torch(rng):
    logits = rng.normal(size=12).astype(np.float32) * 3
    labels = (rng.random(12) > 0.5).astype(np.float32)
    expected = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(labels)
    )
    np.testing.assert_allclose(
        losses.binary_cross_entropy(logits, labels), expected.numpy(), rtol=1e-5
    )


def test_losses_reject_wrong_rank():
    with pytest.raises(ValueError, match="scores must have rank 2"):
        losses.nway_cross_entropy(jnp.zeros(4))


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t, x, y, z: losses.nway_cross_entropy(s),
        lambda s, t, x, y, z: losses.distillation_loss(s, t, teacher_temperature=0.7, alpha=0.6),
        lambda s, t, x, y, z: losses.triplet_loss(x, y, z, margin=5.0),
        lambda s, t, x, y, z: losses.multiple_negatives_ranking_loss(x, jnp.concatenate([y, z])),
        lambda s, t, x, y, z: losses.binary_cross_entropy(s[:, 0], jax.nn.sigmoid(t[:, 0])),
    ],
    ids=["nway", "distill", "triplet", "mnrl", "bce"],
)
def test_gradients_match_finite_differences(rng, loss):
    with jax.enable_x64(True):
        args = [jnp.asarray(rng.normal(size=(3, 4))) for _ in range(5)]
        check_grads(loss, args, order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def _inputs_without_maxsim_near_ties(rng, margin):
    while True:
        q = rng.normal(size=(2, 3, 4))
        d = rng.normal(size=(2, 3, 5, 4))
        similarities = np.sort(np.einsum("qtk,qnsk->qnts", q, d), axis=-1)
        if (similarities[..., -1] - similarities[..., -2]).min() > margin:
            return q, d


def test_maxsim_training_gradient_matches_finite_differences(rng):
    # MaxSim is piecewise linear, so central differences are exact only away from ties: draw
    # inputs until every query token's best document token leads the runner-up by a margin far
    # above what the eps=1e-3 probe can move. Scoring accumulates in float32, hence the tolerance.
    q, d = _inputs_without_maxsim_near_ties(rng, margin=0.2)
    with jax.enable_x64(True):
        q, d = jnp.asarray(q), jnp.asarray(d)

        def pipeline(q, d):
            return losses.nway_cross_entropy(scoring.maxsim_paired(q, d))

        check_grads(pipeline, (q, d), order=1, modes=["rev"], eps=1e-3, atol=2e-3, rtol=2e-3)


def test_losses_jit_and_vmap(rng):
    scores = jnp.asarray(rng.normal(size=(3, 2, 5)))
    per_group = jax.vmap(jax.jit(losses.nway_cross_entropy))(scores)
    expected = jnp.stack([losses.nway_cross_entropy(s) for s in scores])
    np.testing.assert_allclose(per_group, expected, rtol=1e-6)
