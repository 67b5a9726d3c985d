"""MaxSim against a direct numpy reading of the ColBERT definition, on random inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax import scoring


def _reference_maxsim(q, d, dmask, qmask):
    out = np.zeros((q.shape[0], d.shape[0]), np.float64)
    for b in range(q.shape[0]):
        for n in range(d.shape[0]):
            live = d[n][dmask[n]]
            for i in range(q.shape[1]):
                if qmask[b, i]:
                    out[b, n] += max(float(q[b, i] @ t) for t in live)
    return out


@pytest.fixture
def batch(rng):
    q = rng.normal(size=(3, 5, 8)).astype(np.float32)
    d = rng.normal(size=(4, 7, 8)).astype(np.float32)
    dmask = rng.random((4, 7)) > 0.3
    dmask[:, 0] = True
    qmask = rng.random((3, 5)) > 0.2
    return q, d, dmask, qmask


def test_maxsim_matches_definition(batch):
    q, d, dmask, qmask = batch
    got = scoring.maxsim_jit(q, d, dmask, qmask)
    # float32 sums of float32 products against a float64 reference: 1e-5 relative and absolute.
    np.testing.assert_allclose(got, _reference_maxsim(q, d, dmask, qmask), rtol=1e-5, atol=1e-5)


def test_padding_tokens_never_win(batch):
    q, d, dmask, qmask = batch
    spiked = d.copy()
    spiked[~dmask] = 100.0  # padded positions hold huge values; they must be ignored
    np.testing.assert_allclose(
        scoring.maxsim(q, spiked, dmask, qmask), scoring.maxsim(q, d, dmask, qmask), rtol=1e-6
    )


def test_paired_equals_diagonal_blocks(batch):
    q, d, dmask, qmask = batch
    docs = np.stack([d[:2], d[2:]])[:2]  # [2, 2, T, D]
    masks = np.stack([dmask[:2], dmask[2:]])[:2]
    got = scoring.maxsim_paired_jit(q[:2], docs, masks, qmask[:2])
    full = _reference_maxsim(q, d, dmask, qmask)
    np.testing.assert_allclose(got, [full[0, :2], full[1, 2:]], rtol=1e-5, atol=1e-5)


def test_alignment_names_the_best_token(batch):
    q, d, dmask, _ = batch
    idx, sim = scoring.maxsim_alignment(q[0], d[1], dmask[1])
    sims = q[0] @ d[1].T
    sims[:, ~dmask[1]] = -np.inf
    np.testing.assert_array_equal(idx, sims.argmax(-1))
    np.testing.assert_allclose(sim, sims.max(-1), rtol=1e-5)


def test_rank_is_checked():
    with pytest.raises(ValueError, match="queries must have rank 3"):
        scoring.maxsim(jnp.zeros((5, 8)), jnp.zeros((2, 3, 8)))
