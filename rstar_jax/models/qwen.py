"""The Qwen2/Qwen3 decoder as flax.linen modules, with scanned blocks and an optional KV cache.

Shapes: B sequences, T new tokens, S attended positions (T without a cache, the cache length
with one), E embed, H query heads, K kv heads, G = H / K, D head dim, F mlp width, V vocab.

Block (pre-norm):  h = x + Attn(RMSNorm(x));  y = h + Down(silu(Gate(RMSNorm(h))) * Up(RMSNorm(h)))
RMSNorm(x) = w * x / sqrt(mean(x^2) + eps), normalized in fp32.
Attention: q = x Wq (+ bq), k, v likewise with K heads; Qwen3 applies RMSNorm to each q and k head;
RoPE rotates (q, k) by position p: x' = x cos(p w) + rotate_half(x) sin(p w), w_i = theta^(-2i/D);
softmax(q k^T / sqrt(D) + mask) v over the allowed keys, each kv head shared by G query heads.
The mask allows key s for query t iff key_pos[s] <= query_pos[t], the key is valid, and both sit in
the same segment (packed sequences).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from rstar_jax.models.config import ModelConfig
from rstar_jax.models.sharding import MeshRules, constrain

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite, so a row with no allowed key stays finite


class AttentionContext(NamedTuple):
  """What attention needs besides the tokens.

  Attributes:
    positions: int32 [B, T], the RoPE position of each new token.
    mask: bool [B, T, S], key s visible to query t; S is the number of attended positions (T
      without a cache; with one, the leading S cache positions, S <= the cache length).
    write_index: with a cache, (rows, cols) int32 [B, T]: the slot and position each new token's
      key and value are written to; None without a cache.
    unpack: None, or (packed tokens) int32 [N]: the tokens arrive packed as one row [1, N] (their
      positions and write_index [1, N] too), token n being entry unpack[n] of the flattened
      [B, T] = mask.shape[:2] layout attention runs in (B*T or more: a padding token, dropped).
      The projections and the MLP then cost N rows instead of B*T.
  """
  positions: jax.Array
  mask: jax.Array
  write_index: tuple[jax.Array, jax.Array] | None = None
  unpack: jax.Array | None = None


def _param(module: nn.Module, name: str, init, shape, axes, cfg: ModelConfig):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(cfg.param_dtype))


_normal = nn.initializers.normal(stddev=0.02)


def _dense(x: jax.Array, kernel: jax.Array, contract: int = 1, **kwargs) -> jax.Array:
  """jnp.tensordot(x, kernel, contract): x [..., I] (I: `contract` axes) @ kernel [I, O] -> [..., O].

  x's leading axes are merged into one row axis first (a free reshape). The product is the same;
  the point is the backward pass: the kernel gradient x^T g then contracts one row axis instead
  of (B, T), which XLA:CPU runs as a plain matmul, where with two contracted axes it first copies
  the cotangent g into a transposed layout and runs a slower transposed-operand matmul (on the
  57.9M CPU train-step benchmark the output-projection gradient took 2.5 s that way, 0.6 s so).
  """
  lead = x.shape[:x.ndim - contract]
  y = jnp.tensordot(x.reshape((-1,) + x.shape[x.ndim - contract:]), kernel, contract, **kwargs)
  return y.reshape(lead + y.shape[1:])


class RMSNorm(nn.Module):
  """w * x / sqrt(mean(x^2) + eps) over the last axis, computed in fp32 (as transformers does)."""
  cfg: ModelConfig
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x):
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,), self.cfg)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    dtype = jnp.dtype(self.cfg.dtype)
    return scale.astype(dtype) * normed.astype(dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, half-split convention. x: [B, T, N, D]; positions: [B, T] int."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * jnp.cos(angles).astype(x.dtype) + rotated * jnp.sin(angles).astype(x.dtype))


@jax.custom_jvp
def _softmax(x: jax.Array) -> jax.Array:
  """softmax over the last axis, exp(x - max x) / sum exp(x - max x) (the values of jax.nn.softmax).

  Its JVP y * (dx - sum(y dx)) needs only the output y, so differentiation keeps one array of
  x's shape for the backward pass; jax.nn.softmax, differentiated through its max, exp and
  division, keeps three (the masked scores, their exponentials and y).
  """
  unnormalized = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
  return unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)


@_softmax.defjvp
def _softmax_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  y = _softmax(x)
  return y, y * (dx - jnp.sum(y * dx, axis=-1, keepdims=True))


def _attend(q: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array, keys_last: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(D) + mask) v: q [B, T, H, D], key/value [B, K, S, D] (head-major), or
  with `keys_last` key [B, K, D, S] (the cache's layout, kv_cache.py), mask bool [B, T, S].

  Head-major, with the G query heads of each kv head stacked into one [G*T, D] matrix, so both
  products are batched matmuls over (B, K) on row-major operands and the fp32 [B, K, G*T, S]
  scores stay in that layout (only q, k, v and the output are transposed). With the token-major
  form "btkgd,bskd->bkgts" XLA:CPU picked a transposed score layout and copied the scores and
  their gradients between layouts (0.36 s more per step on the 57.9M CPU train-step benchmark).
  """
  b, t, h, d = q.shape
  k, g = key.shape[1], h // key.shape[1]
  q = q.reshape(b, t, k, g, d).transpose(0, 2, 3, 1, 4).reshape(b, k, g * t, d)
  scores = jnp.einsum("bkmd,bkds->bkms" if keys_last else "bkmd,bksd->bkms", q, key,
                      preferred_element_type=jnp.float32) * d ** -0.5
  mask = jnp.broadcast_to(mask[:, None], (b, g) + mask.shape[1:]).reshape(b, 1, g * t, -1)
  probs = _softmax(jnp.where(mask, scores, _NEG_INF)).astype(q.dtype)
  out = jnp.einsum("bkms,bksd->bkmd", probs, value)
  return out.reshape(b, k, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def _attend_causal_chunks(q: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array, chunk: int) -> jax.Array:
  """`_attend` for a causal mask without a cache (S = T), queries in chunks of `chunk`: chunk
  [s, e) attends keys [0, e) only, which the mask already limits it to (ModelConfig.attention_chunk)."""
  t = q.shape[1]
  return jnp.concatenate([_attend(q[:, s:s + chunk], key[:, :, :s + chunk], value[:, :, :s + chunk],
                                  mask[:, s:s + chunk, :s + chunk]) for s in range(0, t, chunk)], axis=1)


class Attention(nn.Module):
  """Grouped-query attention with RoPE, optional q/k norm and biases, optional KV cache."""
  cfg: ModelConfig
  mesh_rules: MeshRules | None = None

  @nn.compact
  def __call__(self, x, ctx: AttentionContext, cache):
    """x [B, T, E] -> ([B, T, E], cache). cache: None or this layer's (k [B, K, D, S_max],
    v [B, K, S_max, D]): the new keys/values are written in place and the first
    S = ctx.mask.shape[-1] positions attended."""
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    e, h, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def project(name, heads):
      kernel = _param(self, f"{name}_kernel", _normal, (e, heads, d), ("embed", "heads", "kv"), cfg)
      y = _dense(x, kernel.astype(dtype))
      if cfg.qkv_bias:
        y = y + _param(self, f"{name}_bias", nn.initializers.zeros, (heads, d), ("heads", "kv"), cfg).astype(dtype)
      return y

    q, key, value = project("q_proj", h), project("k_proj", k), project("v_proj", k)
    if cfg.qk_norm:
      q = RMSNorm(cfg, "kv", name="q_norm")(q)
      key = RMSNorm(cfg, "kv", name="k_norm")(key)
    q = checkpoint_name(rope(q, ctx.positions, cfg.rope_theta), "query_proj")
    key = checkpoint_name(rope(key, ctx.positions, cfg.rope_theta), "key_proj")
    value = checkpoint_name(value, "value_proj")
    q = constrain(q, ("batch", "length", "heads", "kv"), self.mesh_rules)

    if cache is not None:  # write the T new keys/values at each sequence's next positions, in place
      rows, cols = ctx.write_index
      attended = ctx.mask.shape[-1]
      # index (rows, :, :, cols) of keys [B, K, D, S] and (rows, :, cols) of values [B, K, S, D]
      # select [B, T, K, D], the new ones' shape
      cached_keys, cached_values = cache
      cache = (cached_keys.at[rows, :, :, cols].set(key.astype(cached_keys.dtype), mode="drop"),
               cached_values.at[rows, :, cols].set(value.astype(cached_values.dtype), mode="drop"))
      key, value = cache[0][..., :attended].astype(dtype), cache[1][:, :, :attended].astype(dtype)
    else:
      key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
    keys_last = cache is not None

    if ctx.unpack is not None:  # packed [1, N] -> the [B, T] layout of the mask, and back after
      rows, length = ctx.mask.shape[:2]
      q = jnp.zeros((rows * length,) + q.shape[2:], q.dtype).at[ctx.unpack].set(q[0], mode="drop")
      out = _attend(q.reshape((rows, length) + q.shape[1:]), key, value, ctx.mask, keys_last)
      out = jnp.take(out.reshape((rows * length,) + out.shape[2:]), ctx.unpack, axis=0, mode="fill",
                     fill_value=0)[None]
    elif cache is None and 0 < cfg.attention_chunk < q.shape[1]:
      out = _attend_causal_chunks(q, key, value, ctx.mask, cfg.attention_chunk)
    else:
      out = _attend(q, key, value, ctx.mask, keys_last)
    out = checkpoint_name(out, "attention_out")
    o_kernel = _param(self, "o_proj_kernel", _normal, (h, d, e), ("heads", "kv", "embed"), cfg)
    y = _dense(out, o_kernel.astype(dtype), contract=2)
    if cfg.o_bias:
      y = y + _param(self, "o_proj_bias", nn.initializers.zeros, (e,), ("embed",), cfg).astype(dtype)
    return y, cache


class Mlp(nn.Module):
  """SwiGLU: Down(silu(x Wgate) * (x Wup))."""
  cfg: ModelConfig
  mesh_rules: MeshRules | None = None

  @nn.compact
  def __call__(self, x):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    e, f = cfg.hidden_size, cfg.intermediate_size
    gate = _param(self, "gate_proj_kernel", _normal, (e, f), ("embed", "mlp"), cfg).astype(dtype)
    up = _param(self, "up_proj_kernel", _normal, (e, f), ("embed", "mlp"), cfg).astype(dtype)
    down = _param(self, "down_proj_kernel", _normal, (f, e), ("mlp", "embed"), cfg).astype(dtype)
    hidden = checkpoint_name(jax.nn.silu(_dense(x, gate)) * _dense(x, up), "mlp_hidden")
    hidden = constrain(hidden, ("batch", "length", "mlp"), self.mesh_rules)
    return _dense(hidden, down)


class Block(nn.Module):
  """One pre-norm decoder block: carry (residual stream, this layer's cache or None) -> the same;
  scanned over layers without a cache, looped with one (`call_layerwise`)."""
  cfg: ModelConfig
  mesh_rules: MeshRules | None = None

  @nn.compact
  def __call__(self, carry, ctx: AttentionContext):
    x, cache = carry
    attn_out, cache = Attention(self.cfg, self.mesh_rules, name="self_attn")(
        RMSNorm(self.cfg, name="input_layernorm")(x), ctx, cache)
    x = x + attn_out
    x = x + Mlp(self.cfg, self.mesh_rules, name="mlp")(RMSNorm(self.cfg, name="post_attention_layernorm")(x))
    x = constrain(x, ("batch", "length", "embed"), self.mesh_rules)
    return (x, cache), None


# Intermediates tagged with checkpoint_name in Attention and Mlp, which a policy may keep.
REMAT_NAMES = ("query_proj", "key_proj", "value_proj", "attention_out", "mlp_hidden")
_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "projections": jax.checkpoint_policies.save_only_these_names(*REMAT_NAMES),
}


class Decoder(nn.Module):
  """Embedding, scanned blocks, final norm, output projection -> fp32 hidden states or logits.

  __call__(tokens [B, T], ctx) returns the final hidden states [B, T, E] of a cache-free pass (ctx
  an AttentionContext); `project` maps hidden states to fp32 logits [..., V]. `call_layerwise`
  runs the same function with a KV cache, or on parameters split by layer.
  """
  cfg: ModelConfig
  mesh_rules: MeshRules | None = None

  def setup(self):
    cfg = self.cfg
    self.embed_tokens = self.param(
        "embed_tokens", nn.with_logical_partitioning(_normal, ("vocab", "embed")),
        (cfg.vocab_size, cfg.hidden_size), jnp.dtype(cfg.param_dtype))
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=nn.broadcast, length=cfg.num_layers, unroll=min(cfg.scan_unroll, cfg.num_layers),
        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.mesh_rules)
    self.norm = RMSNorm(cfg)
    if not cfg.tie_word_embeddings:
      self.lm_head = self.param("lm_head", nn.with_logical_partitioning(_normal, ("embed", "vocab")),
                                (cfg.hidden_size, cfg.vocab_size), jnp.dtype(cfg.param_dtype))

  def __call__(self, tokens, ctx: AttentionContext):
    (x, _), _ = self.layers((self.embed(tokens), None), ctx)
    return self.norm(x)

  def embed(self, tokens):
    """Token embeddings [B, T, E] in the compute dtype."""
    x = jnp.take(self.embed_tokens, tokens, axis=0).astype(jnp.dtype(self.cfg.dtype))
    return constrain(x, ("batch", "length", "embed"), self.mesh_rules)

  def final_norm(self, x):
    """The final RMSNorm of the hidden states (`call_layerwise` applies it after its loop)."""
    return self.norm(x)

  def project(self, hidden):
    dtype = jnp.dtype(self.cfg.dtype)
    if self.cfg.tie_word_embeddings:
      return _dense(hidden, self.embed_tokens.astype(dtype).T, preferred_element_type=jnp.float32)
    return _dense(hidden, self.lm_head.astype(dtype), preferred_element_type=jnp.float32)


def call_layerwise(cfg: ModelConfig, params, tokens, ctx: AttentionContext, cache=None,
                   mesh_rules: MeshRules | None = None):
  """(final hidden states [B, T, E], cache): Decoder.__call__ with the blocks in a Python loop,
  for a KV cache (None, or (k, v): tuples of each layer's keys [B, K, D, S_max] and values
  [B, K, S_max, D]) or for parameters whose "layers" is a tuple of per-layer trees
  (`models.split_layers`).

  Stacked parameters are sliced per layer here. Split ones are multiplied in place: XLA:CPU copies
  every slice of a stacked array before a matmul reads it, which in a decode step, where each
  weight serves a few rows only, cost ~5 ms of the 57.9M CPU benchmark model's 21 ms.
  """
  layers = params["layers"]
  if not isinstance(layers, tuple):
    layers = layer_trees(layers, cfg.num_layers)
  decoder = Decoder(cfg, mesh_rules)
  x = decoder.apply({"params": params}, tokens, method=Decoder.embed)
  block = Block(cfg, mesh_rules)
  layer_caches = []
  for layer, layer_params in enumerate(layers):
    layer_cache = None if cache is None else (cache[0][layer], cache[1][layer])
    (x, layer_cache), _ = block.apply({"params": layer_params}, (x, layer_cache), ctx)
    layer_caches.append(layer_cache)
  hidden = decoder.apply({"params": params}, x, method=Decoder.final_norm)
  return hidden, None if cache is None else tuple(map(tuple, zip(*layer_caches)))


def layer_trees(stacked, num_layers: int, take=lambda x, layer: x[layer]) -> tuple:
  """The per-layer trees of stacked block parameters: tree l holds take(x, l) of every array x."""
  return tuple(jax.tree.map(lambda x, layer=layer: take(x, layer), stacked) for layer in range(num_layers))
