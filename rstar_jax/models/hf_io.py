"""Hugging Face checkpoint interop: config.json + safetensors (single file or sharded with an index).

Tensor layout (transformers `nn.Linear.weight` is [out, in]; ours are [in, ...heads, ...out]):
  model.embed_tokens.weight [V, E]             -> embed_tokens [V, E]
  model.layers.{i}.self_attn.q_proj.weight [H*D, E] -> layers/self_attn/q_proj_kernel[i] [E, H, D]
  ...k_proj / v_proj [K*D, E] -> [E, K, D];  biases [N*D] -> [N, D]
  ...o_proj.weight [E, H*D]   -> o_proj_kernel[i] [H, D, E]
  ...q_norm.weight / k_norm.weight [D], input_layernorm / post_attention_layernorm [E] -> scale
  ...mlp.{gate,up}_proj.weight [F, E] -> kernel [E, F];  down_proj.weight [E, F] -> [F, E]
  model.norm.weight [E] -> norm/scale;  lm_head.weight [V, E] -> lm_head [E, V] (absent if tied)
Loading builds each parameter shard by shard with jax.make_array_from_callback, reading one
layer's tensor at a time, so no device ever holds a full copy of a sharded parameter. Saving
slices a stacked leaf one layer at a time on device, casts it there to the written dtype and
gathers only that layer to the host.
"""
import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from rstar_jax.models.api import param_shapes, param_shardings
from rstar_jax.models.config import ModelConfig, read_hf_config, to_hf_dict
from rstar_jax.models.sharding import MeshRules

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One HF tensor family <-> one parameter leaf (stacked over layers when `per_layer`)."""
  hf_name: str                 # with "{i}" for the layer index
  path: tuple[str, ...]        # path in our params tree
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  per_layer: bool = True


def _tensor_map(cfg: ModelConfig) -> list[_Tensor]:
  e, f, v, d = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
  same = lambda x: x  # noqa: E731
  layer = "model.layers.{i}."
  out = [
      _Tensor("model.embed_tokens.weight", ("embed_tokens",), (v, e), same, same, per_layer=False),
      _Tensor("model.norm.weight", ("norm", "scale"), (e,), same, same, per_layer=False),
      _Tensor(layer + "input_layernorm.weight", ("layers", "input_layernorm", "scale"), (e,), same, same),
      _Tensor(layer + "post_attention_layernorm.weight", ("layers", "post_attention_layernorm", "scale"),
              (e,), same, same),
      _Tensor(layer + "self_attn.o_proj.weight", ("layers", "self_attn", "o_proj_kernel"),
              (e, cfg.num_heads * d), lambda w: w.T.reshape(cfg.num_heads, d, e),
              lambda k: k.reshape(cfg.num_heads * d, e).T),
  ]
  for name, heads in (("q", cfg.num_heads), ("k", cfg.num_kv_heads), ("v", cfg.num_kv_heads)):
    out.append(_Tensor(layer + f"self_attn.{name}_proj.weight", ("layers", "self_attn", f"{name}_proj_kernel"),
                       (heads * d, e), lambda w, n=heads: w.T.reshape(e, n, d),
                       lambda k, n=heads: k.reshape(e, n * d).T))
    if cfg.qkv_bias:
      out.append(_Tensor(layer + f"self_attn.{name}_proj.bias", ("layers", "self_attn", f"{name}_proj_bias"),
                         (heads * d,), lambda b, n=heads: b.reshape(n, d), lambda b, n=heads: b.reshape(n * d)))
  if cfg.o_bias:
    out.append(_Tensor(layer + "self_attn.o_proj.bias", ("layers", "self_attn", "o_proj_bias"), (e,), same, same))
  if cfg.qk_norm:
    for name in ("q_norm", "k_norm"):
      out.append(_Tensor(layer + f"self_attn.{name}.weight", ("layers", "self_attn", name, "scale"), (d,), same, same))
  for name, shape in (("gate_proj", (f, e)), ("up_proj", (f, e)), ("down_proj", (e, f))):
    out.append(_Tensor(layer + f"mlp.{name}.weight", ("layers", "mlp", f"{name}_kernel"), shape,
                       lambda w: w.T, lambda k: k.T))
  if not cfg.tie_word_embeddings:
    out.append(_Tensor("lm_head.weight", ("lm_head",), (v, e), lambda w: w.T, lambda k: k.T, per_layer=False))
  return out


def _names(cfg: ModelConfig, spec: _Tensor) -> list[str]:
  return [spec.hf_name.format(i=i) for i in range(cfg.num_layers)] if spec.per_layer else [spec.hf_name]


class _Checkpoint:
  """The tensors of a checkpoint directory, by name, opened lazily (memory-mapped)."""

  def __init__(self, path: str):
    index = os.path.join(path, INDEX_FILE)
    if os.path.exists(index):
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
      if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: no weight_map")
      self.file_of = {name: os.path.join(path, file) for name, file in weight_map.items()}
    elif os.path.exists(os.path.join(path, SINGLE_FILE)):
      single = os.path.join(path, SINGLE_FILE)
      with safe_open(single, framework="numpy") as f:
        self.file_of = {name: single for name in f.keys()}
    else:
      raise FileNotFoundError(f"{path} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    self._handles = {}

  def _handle(self, name):
    file = self.file_of[name]
    if file not in self._handles:
      if not os.path.exists(file):
        raise FileNotFoundError(f"{file} (holding {name}) is missing")
      self._handles[file] = safe_open(file, framework="numpy")
    return self._handles[file]

  def names(self):
    return self.file_of.keys()

  def shape(self, name) -> tuple[int, ...]:
    return tuple(self._handle(name).get_slice(name).get_shape())

  def read(self, name) -> np.ndarray:
    return self._handle(name).get_tensor(name)


class _InMemory:
  """HF-named host arrays, read as a `_Checkpoint` is."""

  def __init__(self, tensors: Mapping[str, np.ndarray]):
    self._tensors = tensors

  def names(self):
    return self._tensors.keys()

  def shape(self, name) -> tuple[int, ...]:
    return tuple(self._tensors[name].shape)

  def read(self, name) -> np.ndarray:
    return self._tensors[name]


def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """The HF name and shape of every tensor a checkpoint of `cfg` holds."""
  return {name: spec.hf_shape for spec in _tensor_map(cfg) for name in _names(cfg, spec)}


def _check_tensors(cfg: ModelConfig, ckpt: _Checkpoint | _InMemory, path: str) -> None:
  """Errors naming missing, unexpected or wrongly shaped tensors."""
  expected = hf_tensor_shapes(cfg)
  present = {n for n in ckpt.names() if not n.endswith(_IGNORED_SUFFIXES)}
  if cfg.tie_word_embeddings:
    present.discard("lm_head.weight")  # some exporters also write the tied copy
  missing = sorted(set(expected) - present)
  if missing:
    raise ValueError(f"{path}: checkpoint is missing tensor(s) {', '.join(missing[:8])}"
                     + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
  unexpected = sorted(present - set(expected))
  if unexpected:
    raise ValueError(f"{path}: checkpoint has unexpected tensor(s) {', '.join(unexpected[:8])}"
                     + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else "")
                     + f" for a {cfg.model_type} config")
  for name, shape in expected.items():
    got = ckpt.shape(name)
    if got != shape:
      raise ValueError(f"{path}: tensor {name} has shape {list(got)}, expected {list(shape)}")


# safetensors dtype names -> numpy dtypes (bfloat16 as JAX's numpy extension type)
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}
_SAFETENSORS_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}


def safetensors_parts(tensors: Mapping[str, np.ndarray]) -> list[bytes | memoryview]:
  """A safetensors blob of `tensors` in pieces that share the arrays' memory (no copy of the data):
  the 8-byte header size, the JSON header (space-padded to a multiple of 8 bytes), then each
  tensor's bytes in C order. Joined, they are a file that safetensors reads; ValueError for a dtype
  safetensors has no name for."""
  arrays = {name: np.ascontiguousarray(t) for name, t in tensors.items()}
  header, offset = {}, 0
  for name, t in arrays.items():
    if t.dtype not in _SAFETENSORS_NAMES:
      raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name ({', '.join(_SAFETENSORS_DTYPES)})")
    header[name] = {"dtype": _SAFETENSORS_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
    offset += t.nbytes
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)
  return [len(text).to_bytes(8, "little"), text] + [memoryview(t.reshape(-1).view(np.uint8)) for t in arrays.values()]


def read_safetensors_bytes(blob: bytes) -> dict[str, np.ndarray]:
  """The tensors of a safetensors blob, as read-only views into it (bfloat16 included, which
  `safetensors.numpy.load` refuses). Format: an 8-byte little-endian header size N, N bytes of JSON
  {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__"?}, then the data, offsets
  relative to its start. ValueError naming what is malformed."""
  if len(blob) < 8:
    raise ValueError(f"{len(blob)} bytes: shorter than the 8-byte header size")
  size = int.from_bytes(blob[:8], "little")
  if 8 + size > len(blob):
    raise ValueError(f"header of {size} bytes runs past the {len(blob)}-byte blob")
  try:
    header = json.loads(bytes(blob[8:8 + size]))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"header is not JSON: {e}") from None
  if not isinstance(header, dict):
    raise ValueError(f"header must be a JSON object, got {type(header).__name__}")
  data = memoryview(blob)[8 + size:]
  tensors = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
      shape = tuple(int(d) for d in entry["shape"])
      begin, end = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise ValueError(f"tensor {name!r}: malformed entry {entry!r} (dtypes: {', '.join(_SAFETENSORS_DTYPES)})") from None
    if not 0 <= begin <= end <= len(data) or end - begin != math.prod(shape) * dtype.itemsize:
      raise ValueError(f"tensor {name!r}: data_offsets {[begin, end]} do not hold {entry['dtype']}{list(shape)} "
                       f"within the {len(data)} data bytes")
    tensors[name] = np.frombuffer(data[begin:end], dtype).reshape(shape)
  return tensors


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def load_hf(path: str, dtype=jnp.float32, compute_dtype=None, mesh_rules: MeshRules | None = None,
            **run_time):
  """(cfg, params) from a directory holding config.json and safetensors (qwen2 or qwen3).

  dtype: parameter dtype; compute_dtype: matmul dtype (default: dtype); run_time: ModelConfig's
  run-time fields (remat, attention_chunk, scan_unroll), not in config.json. With mesh_rules each
  parameter is built directly in its NamedSharding, one shard at a time.
  """
  cfg = read_hf_config(os.path.join(path, "config.json"), param_dtype=jnp.dtype(dtype).name,
                       dtype=jnp.dtype(compute_dtype or dtype).name, **run_time)
  ckpt = _Checkpoint(path)
  _check_tensors(cfg, ckpt, path)
  return cfg, _build_params(cfg, ckpt, mesh_rules)


def params_from_hf_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray],
                           mesh_rules: MeshRules | None = None, label: str = "tensors"):
  """The params of `cfg` (in cfg.param_dtype) from HF-named host arrays, as `load_hf` builds them
  from files; ValueError naming missing, unexpected or wrongly shaped tensors (`label` says whose).
  Once checked, `tensors` is consumed: each parameter's entries are removed as it is built, so the
  host does not hold both whole copies at once."""
  source = _InMemory(tensors)
  _check_tensors(cfg, source, label)
  return _build_params(cfg, source, mesh_rules, built=lambda names: [tensors.pop(n) for n in names])


def _build_params(cfg: ModelConfig, ckpt: _Checkpoint | _InMemory, mesh_rules: MeshRules | None,
                  built: Callable[[list[str]], Any] = lambda names: None):
  """Each parameter built shard by shard in its sharding, in cfg.param_dtype, from checked tensors;
  `built(names)` after each, with the HF names it was read from."""
  param_dtype = jnp.dtype(cfg.param_dtype)
  shapes = param_shapes(cfg)
  shardings = (param_shardings(cfg, mesh_rules) if mesh_rules is not None
               else jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes))
  params = {}
  for spec in _tensor_map(cfg):
    names, shape = _names(cfg, spec), _get(shapes, spec.path).shape

    def shard(index, names=names, spec=spec):
      if spec.per_layer:
        rows = [spec.to_ours(ckpt.read(n))[index[1:]] for n in names[index[0]]]
        return np.stack(rows).astype(param_dtype, copy=False)
      # a copy: the array may view an upload's body, which a device array must not keep alive
      return np.ascontiguousarray(spec.to_ours(ckpt.read(names[0]))[index]).astype(param_dtype)

    _set(params, spec.path, jax.make_array_from_callback(shape, _get(shardings, spec.path), shard))
    built(names)
  return params


def _to_host(x: jax.Array) -> np.ndarray:
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnames="dtype")
def _cast(x: jax.Array, dtype) -> jax.Array:
  return x.astype(dtype)


@functools.partial(jax.jit, static_argnames="dtype")
def _layer(x: jax.Array, i, dtype) -> jax.Array:
  """x[i] of a stacked [L, ...] leaf, cast to dtype, on device (one compile per leaf shape)."""
  return jax.lax.dynamic_index_in_dim(x, i, keepdims=False).astype(dtype)


class _Piece(NamedTuple):
  """One HF tensor to write: layer `layer` of a stacked leaf (the whole leaf when None) in `dtype`."""
  name: str
  nbytes: int
  spec: _Tensor
  leaf: jax.Array
  layer: int | None
  dtype: np.dtype


def _host_tensor(piece: _Piece, writer: bool) -> np.ndarray | None:
  """The piece in the HF layout on the writer's host; None on the other processes.

  The slice and the cast happen on device, so the host holds one layer in `dtype` at a time.
  Every process takes part in the gather.
  """
  if piece.layer is not None:
    x = _layer(piece.leaf, piece.layer, piece.dtype)
  else:
    x = piece.leaf if piece.leaf.dtype == piece.dtype else _cast(piece.leaf, piece.dtype)
  x = _to_host(x)
  return np.ascontiguousarray(piece.spec.to_hf(x)) if writer else None


def _host_group(group: list[_Piece], writer: bool) -> dict[str, np.ndarray | None]:
  return {piece.name: _host_tensor(piece, writer) for piece in group}


def _piece_groups(cfg: ModelConfig, params, max_bytes: int, dtype) -> list[list[_Piece]]:
  """The HF tensors of `params` in file order, grouped greedily into at most `max_bytes` each (a
  larger tensor alone); ValueError for a parameter of the wrong shape."""
  shapes = param_shapes(cfg)
  pieces: list[_Piece] = []
  for spec in _tensor_map(cfg):
    leaf = _get(params, spec.path)
    if leaf.shape != _get(shapes, spec.path).shape:
      raise ValueError(f"parameter {'/'.join(spec.path)} has shape {leaf.shape}, expected "
                       f"{_get(shapes, spec.path).shape}")
    out_dtype = jnp.dtype(leaf.dtype if dtype is None else dtype)
    nbytes = int(np.prod(spec.hf_shape)) * out_dtype.itemsize
    layers = range(cfg.num_layers) if spec.per_layer else [None]
    pieces.extend(_Piece(name, nbytes, spec, leaf, layer, out_dtype)
                  for name, layer in zip(_names(cfg, spec), layers))
  groups, size = [[]], 0
  for piece in pieces:
    if groups[-1] and size + piece.nbytes > max_bytes:
      groups.append([])
      size = 0
    groups[-1].append(piece)
    size += piece.nbytes
  return groups


def hf_tensor_groups(cfg: ModelConfig, params, max_bytes: int, dtype=None) -> Iterator[dict[str, np.ndarray | None]]:
  """The HF-named host tensors of `params` (what `save_hf` writes), in groups of at most
  `max_bytes` (a larger tensor alone), each gathered as the iteration reaches it. In a
  multi-process run every process iterates (the gathers are collective); the values are None on
  every process but 0."""
  writer = jax.process_index() == 0
  for group in _piece_groups(cfg, params, max_bytes, dtype):
    yield _host_group(group, writer)


def save_hf(cfg: ModelConfig, params, path: str, max_shard_bytes: int = 5 * 2**30, dtype=None) -> None:
  """Writes config.json and safetensors that transformers' from_pretrained loads.

  One `model.safetensors` when the tensors fit in `max_shard_bytes`, else numbered shards plus
  `model.safetensors.index.json`. dtype: the tensors' dtype (None: the parameter dtype, bit-exact);
  config.json's torch_dtype names it. Stacked per-layer leaves are sliced, cast and gathered one
  layer at a time, and each shard file is written once its tensors are gathered, so the writer's
  host holds at most one shard file's tensors. Only process 0 writes (every process must call it);
  each file is written under a temporary name and renamed, so a failed save leaves no partial file.
  """
  writer = jax.process_index() == 0
  groups = _piece_groups(cfg, params, max_shard_bytes, dtype)
  pieces = [piece for group in groups for piece in group]
  files = ([SINGLE_FILE] if len(groups) == 1 else
           [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
  if writer:
    os.makedirs(path, exist_ok=True)
  for file, group in zip(files, groups):
    tensors = _host_group(group, writer)
    if writer:
      _atomic(os.path.join(path, file), lambda tmp, tensors=tensors: save_file(tensors, tmp, metadata={"format": "pt"}))
  if not writer:
    return
  stale = [os.path.join(path, INDEX_FILE)] if len(groups) == 1 else [os.path.join(path, SINGLE_FILE)]
  if len(groups) > 1:
    index = {"metadata": {"total_size": sum(piece.nbytes for piece in pieces)},
             "weight_map": {piece.name: file for file, group in zip(files, groups) for piece in group}}
    _atomic(os.path.join(path, INDEX_FILE), lambda tmp: _write_json(index, tmp))
  for file in stale:
    if os.path.exists(file):
      os.remove(file)
  hf_config = to_hf_dict(cfg)
  if dtype is not None:
    hf_config["torch_dtype"] = jnp.dtype(dtype).name
  _atomic(os.path.join(path, "config.json"), lambda tmp: _write_json(hf_config, tmp))


def _write_json(obj, path):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def _atomic(path: str, write: Callable[[str], None]) -> None:
  tmp = path + ".tmp"
  write(tmp)
  os.replace(tmp, path)
