"""Split an index by documents over the local devices, and merge per-shard top-k lists.

An index lives on a one-axis `("data",)` mesh: every per-document array is padded to a multiple
of the device count and split along its document axis with `NamedSharding`; small shared arrays
(centroids, codec tables, queries) are replicated. Per-shard work runs under `jax.shard_map`;
`merge_top_k` then all-gathers each shard's best entries and keeps the global best. Ties go to
the lower global document number on any device count, so one device and eight give the same
ranking.

Shapes: B queries, N documents (padded), S shards, k entries kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None, *, explicit: bool = True) -> Mesh:
    """A one-axis ("data",) mesh over `devices` (default: every local device).

    explicit=False gives an Auto axis, for the training step: there XLA propagates the batch
    sharding through the model and the losses, whose gathers and batch-by-batch einsums an
    Explicit axis would reject without per-op output shardings.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    axis_type = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(axis_type,), devices=devices)


def num_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def _place(array, sharding: NamedSharding) -> jax.Array:
    if sharding.is_fully_addressable:
        return jax.device_put(array, sharding)
    # Across processes device_put is a collective (every process must call it at once);
    # from the callback each process places only its own devices' parts, alone.
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_along(array: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Place `array` on the mesh split along `axis` (its length must divide evenly)."""
    spec = [None] * array.ndim
    spec[axis] = DATA_AXIS
    return _place(array, NamedSharding(mesh, P(*spec)))


def replicate(array, mesh: Mesh) -> jax.Array:
    """Place a copy of `array` on every device of the mesh."""
    return _place(array, NamedSharding(mesh, P()))


def shard_offset(docs_per_shard: int) -> jax.Array:
    """Inside shard_map: the global number of this shard's first document."""
    return jax.lax.axis_index(DATA_AXIS) * docs_per_shard


def merge_top_k(scores: jax.Array, ids: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Inside shard_map: global top-k from every shard's sorted candidates.

    scores [B, K_local] float32 (descending, -inf = empty), ids [B, K_local] int32 global doc
    numbers (-1 = empty) -> the best k over all shards, (scores [B, k], ids [B, k]), the same on
    every shard. Shards hold ascending document ranges and each local list breaks ties by lower
    number, so position order in the gathered list is global-id order and `top_k` (stable) breaks
    ties the way a single device does.
    """
    all_scores = jax.lax.all_gather(scores, DATA_AXIS, axis=1, tiled=True)  # [B, S * K_local]
    all_ids = jax.lax.all_gather(ids, DATA_AXIS, axis=1, tiled=True)
    k = min(k, all_scores.shape[1])
    best, where = jax.lax.top_k(all_scores, k)
    return best, jnp.take_along_axis(all_ids, where, axis=1)


def local_top_k(
    scores: jax.Array, local_ids: jax.Array, k: int, offset: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-shard top-k: scores [B, n] (-inf = empty), local_ids [B, n] int32 local doc numbers
    -> (scores [B, k'], global ids [B, k'] with -1 for empty), k' = min(k, n)."""
    k = min(k, scores.shape[1])
    best, where = jax.lax.top_k(scores, k)
    ids = jnp.take_along_axis(local_ids, where, axis=1) + offset
    return best, jnp.where(jnp.isfinite(best), ids, -1).astype(jnp.int32)


def owned(global_ids: jax.Array, offset: jax.Array, docs_per_shard: int):
    """Inside shard_map: which of `global_ids` [...] this shard holds, and their local numbers
    (clipped into range where not owned, so they can index without going out of bounds)."""
    local = global_ids - offset
    mine = (global_ids >= 0) & (local >= 0) & (local < docs_per_shard)
    return mine, jnp.clip(local, 0, docs_per_shard - 1)


def combine_owned(values: jax.Array, mine: jax.Array, valid: jax.Array) -> jax.Array:
    """Inside shard_map: every shard scored the entries it owns; sum the owners' values across
    shards (x + 0 is exact, so the result equals the owner's value) and mark empty entries -inf."""
    total = jax.lax.psum(jnp.where(mine, values, 0.0), DATA_AXIS)
    return jnp.where(valid, total, -jnp.inf)
