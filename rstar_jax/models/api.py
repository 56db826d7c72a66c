"""The functional policy API: parameters as a plain pytree, jitted forward passes keyed on the config.

  params = init_params(cfg, key, mesh_rules)        # created directly in their shardings
  logits(cfg, params, input_ids)                    # [B, T] int32 -> [B, T, V] fp32, causal
  forward(cfg, params, input_ids, positions, segment_ids, mesh_rules)   # packed sequences
  logits, cache = extend(cfg, params, cache, tokens, num_new[, slots=]) # incremental decoding

Every entry point is a module-level jitted function with the config (and mesh rules) static,
so calls with equal shapes compile once.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rstar_jax.models.config import ModelConfig
from rstar_jax.models.kv_cache import KVCache
from rstar_jax.models.qwen import AttentionContext, Decoder, call_layerwise, layer_trees
from rstar_jax.models.sharding import MeshRules, check_divisible, constrain


def _abstract_boxed_params(cfg: ModelConfig):
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(lambda t: Decoder(cfg).init(jax.random.key(0), t, _causal_ctx(t))["params"], tokens)


@functools.lru_cache(maxsize=64)
def param_logical_axes(cfg: ModelConfig):
  """Pytree (same structure as params) of PartitionSpecs of logical axis names."""
  return nn.get_partition_spec(_abstract_boxed_params(cfg))


def param_shapes(cfg: ModelConfig):
  """Pytree of jax.ShapeDtypeStruct of the parameters (no allocation)."""
  return nn.meta.unbox(_abstract_boxed_params(cfg))


def param_shardings(cfg: ModelConfig, mesh_rules: MeshRules):
  """Pytree of NamedShardings of the parameters under `mesh_rules`; errors name a parameter
  whose axis does not divide over its mesh axes."""
  def sharding(path, spec, shape):
    check_divisible(mesh_rules, shape.shape, tuple(spec), f"parameter {jax.tree_util.keystr(path)}")
    return mesh_rules.sharding(tuple(spec))
  return jax.tree_util.tree_map_with_path(sharding, param_logical_axes(cfg), param_shapes(cfg),
                                          is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


@functools.lru_cache(maxsize=16)
def _jitted_init(cfg: ModelConfig, mesh_rules: MeshRules | None):
  def init(key):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return nn.meta.unbox(Decoder(cfg).init(key, tokens, _causal_ctx(tokens))["params"])
  shardings = None if mesh_rules is None else param_shardings(cfg, mesh_rules)
  return jax.jit(init, out_shardings=shardings)


def init_params(cfg: ModelConfig, key: jax.Array, mesh_rules: MeshRules | None = None):
  """Random parameters (kernels ~ N(0, 0.02), norms 1, biases 0), created in their shardings."""
  return _jitted_init(cfg, mesh_rules)(key)


def _causal_ctx(tokens, positions=None, segment_ids=None):
  """Attention context of a cache-free pass: key s visible to query t iff s <= t (same segment)."""
  b, t = tokens.shape
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  index = jnp.arange(t)
  mask = jnp.broadcast_to(index[None, :] <= index[:, None], (b, t, t))
  if segment_ids is not None:
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
  return AttentionContext(positions, mask)


def _check_tokens(cfg: ModelConfig, input_ids, what: str) -> None:
  if getattr(input_ids, "ndim", None) != 2:
    raise ValueError(f"{what} must be an int array [B, T], got shape {getattr(input_ids, 'shape', None)}")
  if not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(f"{what} must have an integer dtype, got {input_ids.dtype}")
  if isinstance(input_ids, np.ndarray) and input_ids.size:
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= cfg.vocab_size:
      raise ValueError(f"{what} holds ids in [{low}, {high}], outside the vocabulary [0, {cfg.vocab_size})")


def split_layers(params, consume: bool = False):
  """The same parameters with "layers" a tuple of per-layer trees (layer l: the stacked arrays'
  slice l, in the stacked array's sharding less its layer axis); already split ones unchanged.
  consume: the caller gives `params` up (its "layers" entry is taken out), and each stacked array
  is dropped once sliced, so the split needs one array's worth of memory beside the parameters,
  not a second copy of every layer (servers loading new weights).

  Every entry point takes either form and computes the same function; split ones run the blocks
  in a Python loop over their own arrays (`qwen.call_layerwise`), multiplied in place, which the
  engine's cached passes need for speed, at the price of a copy of the weights (and, in
  cache-free passes, a program L times larger than the scan's). Training keeps the stacked form
  (the scan, remat)."""
  if not isinstance(params, dict) or "layers" not in params:
    raise ValueError(f"split_layers takes a parameter tree with 'layers', got {type(params).__name__} "
                     f"{list(params) if isinstance(params, dict) else ''}")
  if isinstance(params["layers"], tuple):
    return params

  def take(x, layer):
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
      return x[layer]
    return jax.device_put(x[layer], jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[1:])))

  num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
  if not consume:
    return {**params, "layers": layer_trees(params["layers"], num_layers, take)}
  stacked, treedef = jax.tree.flatten(params.pop("layers"))
  sliced = []
  for i in range(len(stacked)):
    x, stacked[i] = stacked[i], None
    sliced.append([take(x, layer) for layer in range(num_layers)])
    del x
  return {**params, "layers": tuple(jax.tree.unflatten(treedef, [leaf[layer] for leaf in sliced])
                                    for layer in range(num_layers))}


def _decoder(cfg, params, tokens, ctx, cache, mesh_rules):
  """(final hidden states, cache) of the decoder on either parameter form (`split_layers`): the
  layer scan for stacked parameters without a cache, else the layer loop."""
  if cache is not None or isinstance(params["layers"], tuple):
    return call_layerwise(cfg, params, tokens, ctx, cache, mesh_rules)
  return Decoder(cfg, mesh_rules).apply({"params": params}, tokens, ctx), None


@functools.partial(jax.jit, static_argnames=("cfg", "mesh_rules", "return_hidden"))
def _forward(cfg, params, input_ids, positions, segment_ids, mesh_rules, return_hidden=False):
  model = Decoder(cfg, mesh_rules)
  input_ids = constrain(input_ids, ("batch", "length"), mesh_rules)
  hidden, _ = _decoder(cfg, params, input_ids, _causal_ctx(input_ids, positions, segment_ids), None, mesh_rules)
  if return_hidden:
    return hidden
  return constrain(model.apply({"params": params}, hidden, method=Decoder.project),
                   ("batch", "length", "vocab"), mesh_rules)


def forward(cfg: ModelConfig, params, input_ids, positions=None, segment_ids=None,
            mesh_rules: MeshRules | None = None):
  """Logits fp32 [B, T, V] of a causal pass over input_ids int [B, T].

  positions: int [B, T] RoPE positions (default 0..T-1 per row); segment_ids: int [B, T] for
  packed rows (tokens attend only within their segment; restart positions per segment).
  """
  _check_tokens(cfg, input_ids, "input_ids")
  return _forward(cfg, params, input_ids, positions, segment_ids, mesh_rules)


def hidden_states(cfg: ModelConfig, params, input_ids, positions=None, segment_ids=None,
                  mesh_rules: MeshRules | None = None):
  """Final-norm hidden states [B, T, E] (compute dtype); `output_logits` maps them to logits."""
  _check_tokens(cfg, input_ids, "input_ids")
  return _forward(cfg, params, input_ids, positions, segment_ids, mesh_rules, return_hidden=True)


def output_logits(cfg: ModelConfig, params, hidden):
  """fp32 logits [..., V] of final hidden states [..., E] (traceable; for chunked log-probs)."""
  return Decoder(cfg).apply({"params": params}, hidden, method=Decoder.project)


def target_log_softmax(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log_softmax(logits)[..., targets] fp32 [...], without a [..., V] log-softmax array.

  With m = max_v z_v (a constant for differentiation): log p_y = (z_y - m) - log sum_v exp(z_v - m),
  the same arithmetic as jax.nn.log_softmax followed by the gather, so the values agree bitwise.
  The gradient z -> onehot(y) - softmax(z) then fuses into one elementwise pass; gathering from a
  full log_softmax instead made XLA:CPU fuse the max and subtraction into the logits matmul, which
  ran 2.3x slower than the matmul alone (1.8 s vs 0.78 s on the CPU train-step benchmark).
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return (picked - shift) - jnp.log(jnp.sum(jnp.exp(logits - shift[..., None]), axis=-1))


def token_logprobs(cfg: ModelConfig, params, input_ids, targets, positions, segment_ids,
                   mesh_rules: MeshRules | None = None, logits_chunk: int = 0,
                   temperature: float | jax.Array = 1.0) -> jax.Array:
  """log softmax(z / temperature)[targets] fp32 [b, T] for one packed microbatch (traceable;
  `temperature` may be traced). With `logits_chunk` > 0, in chunks of that many positions, each
  chunk's logits rematerialized in a backward pass, so [b, T, V] logits are never stored."""
  hidden = hidden_states(cfg, params, input_ids, positions, segment_ids, mesh_rules)
  b, t = targets.shape

  def logprobs(h, y):
    logits = output_logits(cfg, params, h)
    unscaled = isinstance(temperature, (int, float)) and temperature == 1.0
    return target_log_softmax(logits if unscaled else logits / temperature, y)

  if not logits_chunk or logits_chunk >= t:  # keep the [b, T, V] logits for the backward pass
    return logprobs(hidden, targets)
  if t % logits_chunk:
    raise ValueError(f"logits_chunk={logits_chunk} must divide the row length {t}")
  h = hidden.reshape(b, t // logits_chunk, logits_chunk, -1).swapaxes(0, 1)
  y = targets.reshape(b, t // logits_chunk, logits_chunk).swapaxes(0, 1)
  chunk_logprobs = jax.checkpoint(logprobs)  # the backward pass recomputes each chunk's logits
  return jax.lax.map(lambda hy: chunk_logprobs(*hy), (h, y)).swapaxes(0, 1).reshape(b, t)


def logits(cfg: ModelConfig, params, input_ids):
  """Logits fp32 [B, T, V] of input_ids int32 [B, T]: causal, no padding, positions 0..T-1."""
  return forward(cfg, params, input_ids)


def _extend_body(cfg, params, cache, tokens, num_new, mesh_rules, attend_length, packed_length=None):
  b, t = tokens.shape
  start = cache.lengths
  positions = start[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
  new_lengths = start + num_new
  key_pos = jnp.arange(attend_length or cache.max_length, dtype=jnp.int32)
  mask = (key_pos[None, None, :] <= positions[:, :, None]) & (key_pos[None, None, :] < new_lengths[:, None, None])
  rows = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], (b, t))
  if packed_length is None:
    ctx = AttentionContext(positions, mask, (rows, positions))
  else:  # the real tokens in row order, then padding (index b * t: written nowhere, read as 0)
    real = (jnp.arange(t)[None, :] < num_new[:, None]).reshape(-1)
    unpack = jnp.nonzero(real, size=packed_length, fill_value=b * t)[0].astype(jnp.int32)

    def packed(x, fill):
      return jnp.take(x.reshape(-1), unpack, mode="fill", fill_value=fill)[None]

    ctx = AttentionContext(packed(positions, 0), mask, (packed(rows, 0), packed(positions, cache.max_length)),
                           unpack)
    tokens = packed(tokens, 0)
  model = Decoder(cfg, mesh_rules)
  hidden, (k, v) = _decoder(cfg, params, tokens, ctx, (cache.k, cache.v), mesh_rules)
  if packed_length is None:
    last = jnp.clip(num_new - 1, 0, t - 1)
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  else:
    last_hidden = hidden[0, jnp.clip(jnp.cumsum(num_new) - 1, 0, packed_length - 1)]
  out = model.apply({"params": params}, last_hidden, method=Decoder.project)
  return out, KVCache(k, v, new_lengths)


_extend = jax.jit(_extend_body, static_argnames=("cfg", "mesh_rules", "attend_length", "packed_length"),
                  donate_argnames=("cache",))


@functools.partial(jax.jit, static_argnames=("cfg", "mesh_rules", "attend_length", "packed_length"),
                   donate_argnames=("cache",))
def _extend_slots(cfg, params, cache, tokens, num_new, slots, mesh_rules, attend_length, packed_length):
  sub = KVCache(tuple(k[slots] for k in cache.k), tuple(v[slots] for v in cache.v), cache.lengths[slots])
  out, sub = _extend_body(cfg, params, sub, tokens, num_new, mesh_rules, attend_length, packed_length)
  return out, KVCache(tuple(k.at[slots].set(new) for k, new in zip(cache.k, sub.k)),
                      tuple(v.at[slots].set(new) for v, new in zip(cache.v, sub.v)),
                      cache.lengths.at[slots].set(sub.lengths))


def lower_extend(cfg: ModelConfig, params, cache: KVCache, tokens, num_new, mesh_rules: MeshRules | None = None,
                 attend_length: int | None = None) -> jax.stages.Lowered:
  """`extend` over all slots, lowered for its arguments' shapes and shardings (ShapeDtypeStructs
  will do), for compile-only checks."""
  return _extend.lower(cfg, params, cache, tokens, num_new, mesh_rules, attend_length)


def extend(cfg: ModelConfig, params, cache: KVCache, tokens, num_new, mesh_rules: MeshRules | None = None,
           slots=None, attend_length: int | None = None, packed_length: int | None = None):
  """Appends tokens to cache slots; returns (logits fp32 [b, V] of each row's last new token, cache).

  tokens: int [b, T], right-padded; num_new: int32 [b], real tokens per row (0: slot unchanged,
  its logits meaningless). Row i goes to slot `slots[i]` (int32 [b], distinct), or to slot i when
  `slots` is None (then b = the number of slots). A call with `slots` computes only its b rows,
  so a prefill of a few slots does not pay for the others. The cache is donated; each layer
  writes just the new positions, in place. `attend_length` (static; default the cache length)
  limits attention to the first positions of each slot: it must cover every row's new length
  (callers pass a power-of-two bucket of the longest live sequence, so short sequences do not
  pay for the allocated length). See kv_cache.py for the padding convention.
  `packed_length` (static; one device only): the real tokens, at most that many, are computed
  packed into one row of that length (AttentionContext.unpack), so rows of different lengths do
  not pay for each other's padding in the projections and the MLP; the values equal the padded
  call's up to fp32 rounding.
  """
  _check_tokens(cfg, tokens, "tokens")
  if packed_length is not None:
    real = int(np.sum(num_new))
    if mesh_rules is not None or not real <= packed_length <= tokens.size:
      raise ValueError(f"packed_length must be in [{real} (the real tokens), {tokens.size} (b x T)] and the call "
                       f"on one device (mesh_rules None), got {packed_length} with mesh_rules {mesh_rules}")
  num_new = jnp.asarray(num_new, jnp.int32)
  if attend_length is not None and not 0 < attend_length <= cache.max_length:
    raise ValueError(f"attend_length must be in [1, {cache.max_length}], got {attend_length}")
  if attend_length == cache.max_length:
    attend_length = None  # one compiled variant for the whole length
  if slots is None:
    if tokens.shape[0] != cache.num_slots:
      raise ValueError(f"tokens has {tokens.shape[0]} rows but the cache has {cache.num_slots} slots")
    return _extend(cfg, params, cache, tokens, num_new, mesh_rules, attend_length, packed_length)
  slots = np.asarray(slots)
  if slots.shape != (tokens.shape[0],) or len(set(slots.tolist())) != slots.size or (
      slots.size and not 0 <= slots.min() <= slots.max() < cache.num_slots):
    raise ValueError(f"slots must be {tokens.shape[0]} distinct indices in [0, {cache.num_slots}), "
                     f"one per row of tokens, got {slots.tolist()}")
  return _extend_slots(cfg, params, cache, tokens, num_new, jnp.asarray(slots, jnp.int32), mesh_rules,
                       attend_length, packed_length)
