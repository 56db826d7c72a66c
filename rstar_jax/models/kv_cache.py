"""A slot-based KV cache for incremental decoding and continuous batching.

The cache holds B slots; slot b stores the keys and values of one sequence at positions
0 .. lengths[b]-1 of its own row: one keys array [B, K, D, S] and one values array [B, K, S, D]
per layer, head-major. Keys keep positions last, so the scores q k^T read them as a row-major
[D, S] operand: stored [S, D], XLA:CPU's matmul repacked each slot's keys on every call, a copy
as costly as the product itself when a decode step has one query per slot (the tiny default's
decode step: ~21 -> ~13 ms). Separate arrays per layer, so each layer writes and reads its own in place (XLA:CPU copies a
slice of a stacked [L, ...] array before a matmul reads it). Each slot advances independently:
`models.extend` appends num_new[b] tokens to slot b (0 leaves it as it is), so prefill, one-token
decode steps and multi-token tool outputs are the same operation, and a finished slot can be
reset and refilled with a new request while the others keep decoding.

Padding convention: a batch of new tokens [B, T] is right-padded; row b holds num_new[b] real
tokens followed by any filler. The filler's keys/values are written at positions >= the new
length, never attended (keys are valid iff position < lengths[b]), and overwritten by the next
tokens of that slot. Positions (for RoPE) are per slot: the token written at cache row s of slot
b has position s. Callers keep lengths[b] + num_new[b] <= S; writes past S are dropped.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rstar_jax.models.config import ModelConfig
from rstar_jax.models.sharding import MeshRules

KEY_AXES = ("batch", "heads", "kv", "length")  # of each layer's keys array
VALUE_AXES = ("batch", "heads", "length", "kv")  # of each layer's values array
LAYER_AXES = (KEY_AXES, VALUE_AXES)  # in the order of layer_shapes


def layer_shapes(cfg: ModelConfig, num_slots: int, max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(keys, values) shapes of one layer's arrays: [B, K, D, S] and [B, K, S, D]."""
  return ((num_slots, cfg.num_kv_heads, cfg.head_dim, max_length),
          (num_slots, cfg.num_kv_heads, max_length, cfg.head_dim))


@struct.dataclass
class KVCache:
  """k, v: tuples of L arrays, one per layer, keys [B, K, D, S] and values [B, K, S, D]; lengths:
  int32 [B], the number of valid positions of each slot."""
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  lengths: jax.Array

  @property
  def max_length(self) -> int:
    return self.v[0].shape[2]

  @property
  def num_slots(self) -> int:
    return self.k[0].shape[0]


def init_cache(cfg: ModelConfig, num_slots: int, max_length: int, dtype=None,
               mesh_rules: MeshRules | None = None) -> KVCache:
  """An empty cache of `num_slots` slots of `max_length` positions, in `dtype` (default: compute)."""
  if num_slots <= 0 or max_length <= 0:
    raise ValueError(f"num_slots and max_length must be positive, got {num_slots}, {max_length}")
  shapes = layer_shapes(cfg, num_slots, max_length)
  dtype = jnp.dtype(dtype or cfg.dtype)

  def make():
    k, v = (tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)) for shape in shapes)
    return KVCache(k, v, jnp.zeros((num_slots,), jnp.int32))

  if mesh_rules is None:
    return make()
  k, v = ((mesh_rules.sharding(axes),) * cfg.num_layers for axes in LAYER_AXES)
  return jax.jit(make, out_shardings=KVCache(k, v, mesh_rules.sharding(("batch",))))()


def copy_prefixes(cache: KVCache, sources, targets, lengths) -> KVCache:
  """Slot targets[i] takes the first lengths[i] positions of slot sources[i] (a shared prefix is
  computed once). Whole rows are copied; a target's positions past lengths[i] are stale and never
  attended. The cache is donated.

  Raises:
    ValueError: the three differ in size, targets repeat, a target is also a source, a slot is out
      of range, or a length is outside [0, max_length].
  """
  sources, targets, lengths = (np.asarray(x, np.int32).reshape(-1) for x in (sources, targets, lengths))
  slots = np.concatenate([sources, targets])
  valid = (sources.size == targets.size == lengths.size and len(set(targets.tolist())) == targets.size
           and not set(targets.tolist()) & set(sources.tolist())
           and np.all((0 <= slots) & (slots < cache.num_slots))
           and np.all((0 <= lengths) & (lengths <= cache.max_length)))
  if not valid:
    raise ValueError(f"copy_prefixes needs distinct targets that are not sources, slots in [0, {cache.num_slots}) "
                     f"and lengths in [0, {cache.max_length}]; got sources {sources.tolist()}, targets "
                     f"{targets.tolist()}, lengths {lengths.tolist()}")
  # pad to a power of two by repeating the first copy (the same write twice), so few shapes compile
  size = 1 << max(sources.size - 1, 0).bit_length()
  pad = size - sources.size
  sources, targets, lengths = (np.concatenate([x, np.repeat(x[:1], pad)]) for x in (sources, targets, lengths))
  return _copy_rows(cache, jnp.asarray(sources), jnp.asarray(targets), jnp.asarray(lengths))


@functools.partial(jax.jit, donate_argnums=0)
def _copy_rows(cache: KVCache, sources, targets, lengths) -> KVCache:
  return cache.replace(k=tuple(k.at[targets].set(k[sources]) for k in cache.k),
                       v=tuple(v.at[targets].set(v[sources]) for v in cache.v),
                       lengths=cache.lengths.at[targets].set(lengths))


def reset_slots(cache: KVCache, slots: jax.Array) -> KVCache:
  """Empties the slots where `slots` (bool [B]) is true; their stale entries are never attended."""
  return cache.replace(lengths=jnp.where(slots, 0, cache.lengths))
