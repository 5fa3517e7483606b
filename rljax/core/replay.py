"""A replay buffer that is a pure pytree of fixed capacity, split into segments.

The buffer holds ``num_segments`` ring buffers of ``segment_capacity`` items
each. Items are written to the *current* segment; ``new_segment`` moves on to
the next one, evicting the oldest segment once all are used (AILBoost keeps the
data of its K most recent weak learners this way). Sampling draws a segment,
then an item of it uniformly:

* ``sample(..., segment_weights=None)``: segment with probability size_k / total,
  i.e. uniform over all stored items (plain SAC: use one segment);
* ``sample(..., segment_weights=w)``: segment by weight w_k (over non-empty
  segments), then uniform within it (AILBoost's mixture sampling).

Why not flashbax: its prioritised buffer samples single items by priority; the
same distribution would need every item's priority rewritten whenever the
mixture weights decay (O(capacity) per round) and a sum tree's float drift.
Segment-then-item sampling is direct and exact here.

Shapes: an item is any pytree; stored leaves are ``[num_segments, segment_capacity, ...]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rljax.core.config import ConfigError


@struct.dataclass
class ReplayState:
    """A fixed-capacity replay buffer as a pytree: ``num_segments`` ring buffers of ``segment_capacity`` items.

    Built by :func:`init`; shapes (static) are read off the arrays.
    """

    data: Any  # pytree, leaves [num_segments, segment_capacity, ...]
    position: jax.Array  # [num_segments] next write index in each segment's ring
    size: jax.Array  # [num_segments] number of valid items per segment
    current: jax.Array  # index of the segment being written

    @property
    def num_segments(self) -> int:
        return self.position.shape[0]

    @property
    def segment_capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[1]


def init(example_item: Any, segment_capacity: int, num_segments: int = 1) -> ReplayState:
    """An empty buffer whose items look like ``example_item`` (no batch axis)."""
    if segment_capacity <= 0 or num_segments <= 0:
        raise ConfigError(
            f"replay: segment_capacity and num_segments must be positive, got {segment_capacity} and {num_segments}"
        )
    data = jax.tree.map(
        lambda x: jnp.zeros((num_segments, segment_capacity) + jnp.shape(x), jnp.asarray(x).dtype), example_item
    )
    zeros = jnp.zeros((num_segments,), jnp.int32)
    return ReplayState(data=data, position=zeros, size=zeros, current=jnp.zeros((), jnp.int32))


def add(state: ReplayState, batch: Any) -> ReplayState:
    """Append a batch of items (leaves ``[B, ...]``) to the current segment's ring."""
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    capacity = state.segment_capacity
    if batch_size > capacity:
        raise ConfigError(f"replay.add: batch of {batch_size} items exceeds segment_capacity = {capacity}")
    seg = state.current
    index = (state.position[seg] + jnp.arange(batch_size)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[seg, index].set(x.astype(buf.dtype)), state.data, batch)
    return state.replace(
        data=data,
        position=state.position.at[seg].set((state.position[seg] + batch_size) % capacity),
        size=state.size.at[seg].set(jnp.minimum(state.size[seg] + batch_size, capacity)),
    )


def new_segment(state: ReplayState) -> ReplayState:
    """Start writing to the next segment, emptying it (it held the oldest data)."""
    seg = (state.current + 1) % state.num_segments
    return state.replace(current=seg, position=state.position.at[seg].set(0), size=state.size.at[seg].set(0))


def sample(state: ReplayState, key: jax.Array, batch_size: int, segment_weights: jax.Array | None = None):
    """``batch_size`` items: a segment per item (by size or by weight), then an item uniformly in it.

    Returns ``(items, segment_ids)``. Sampling an empty buffer returns zeros.
    """
    seg_key, item_key = jax.random.split(key)
    nonempty = state.size > 0
    if segment_weights is None:
        logits = jnp.log(state.size.astype(jnp.float32))
    else:
        logits = jnp.where(nonempty, jnp.log(jnp.asarray(segment_weights, jnp.float32)), -jnp.inf)
    logits = jnp.where(nonempty.any(), logits, 0.0)  # an empty buffer: any segment (all zeros)
    segments = jax.random.categorical(seg_key, logits, shape=(batch_size,))
    offsets = jax.random.uniform(item_key, (batch_size,))
    items = jnp.minimum((offsets * state.size[segments]).astype(jnp.int32), state.segment_capacity - 1)
    return jax.tree.map(lambda buf: buf[segments, items], state.data), segments
