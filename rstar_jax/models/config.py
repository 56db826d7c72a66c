"""ModelConfig: the decoder's architecture and numerics, and its Hugging Face config.json form.

One frozen (hashable) dataclass covers the Qwen2/Qwen2.5 and Qwen3 families:
  qwen2: q/k/v projections carry a bias, no q/k norm, head_dim = hidden / heads unless given.
  qwen3: per-head RMSNorm on q and k (over head_dim), optional bias on all four projections
         (`attention_bias`), head_dim given explicitly (may differ from hidden / heads).
Architecture fields round-trip through config.json; `dtype`, `param_dtype`, `remat`,
`attention_chunk` and `scan_unroll` are run-time choices and are not written there.
"""
import dataclasses
import json
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots", "projections")
_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of a Qwen2/Qwen3 decoder.

  Attributes:
    model_type: "qwen2" or "qwen3".
    vocab_size: V, rows of the embedding table.
    hidden_size: E, the residual width.
    intermediate_size: F, the SwiGLU width.
    num_layers: decoder blocks.
    num_heads: H, query heads.
    num_kv_heads: K, key/value heads (grouped-query attention when K < H; H % K == 0).
    head_dim: D, per-head width (Qwen3 may have H * D != E).
    rope_theta: RoPE base; inverse frequencies theta^(-2i/D), i < D/2.
    rms_norm_eps: epsilon inside every RMSNorm.
    tie_word_embeddings: the output projection is the embedding table transposed.
    qkv_bias: q/k/v projections have a bias (always for qwen2; `attention_bias` for qwen3).
    o_bias: the output projection has a bias (qwen3 `attention_bias`).
    qk_norm: per-head RMSNorm of q and k before RoPE (qwen3).
    max_position_embeddings: the longest context the checkpoint declares.
    bos_token_id, eos_token_id: as in config.json (eos may be a tuple), or None.
    dtype: compute dtype of matmuls ("float32" | "bfloat16"); norms, softmax and logits are fp32.
    param_dtype: storage dtype of parameters.
    remat: rematerialization of each block in the backward pass: "none", "full" (recompute
      everything), "dots" (save matmul outputs without batch dims, recompute the rest) or
      "projections" (save the tagged q/k/v projections, attention output and MLP hidden state:
      qwen.REMAT_NAMES; recompute norms, softmax and the rest).
    attention_chunk: without a KV cache (training, log-probs), queries are attended in chunks of
      this many positions, chunk i against the causally visible keys [0, end of chunk i) only:
      about half the attention FLOPs and score memory of one [T, T] block, and each chunk's
      scores fit in cache. 0: all queries at once. Equal up to float rounding (the keys beyond a
      chunk are masked out either way); needs a causal mask, as every cache-less call has.
    scan_unroll: layers per iteration of the scan over layers in cache-free passes (training,
      log-probs). 1: one layer per iteration (the smallest program; each layer's weights are a
      dynamic slice of the stacked ones, which XLA:CPU copies out before its matmuls read them);
      >= num_layers: all unrolled, every slice static, so the weights are read in place (CPU,
      one core: the 57.9M benchmark's train step 5.3 -> 4.8 s, the tiny default's RL update
      4.1 -> 3.6 s). Passes with a KV cache (the engine) ignore it: they run the blocks in a
      Python loop over each layer's cache arrays (`qwen.call_layerwise`), on weights split by
      layer (`models.split_layers`). Equal values up to float rounding (fusions differ).
  """
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 32768
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  attention_chunk: int = 0
  scan_unroll: int = 1

  def __post_init__(self):
    validate(self)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    """eos_token_id as a tuple (empty when None)."""
    eos = self.eos_token_id
    return () if eos is None else tuple(eos) if isinstance(eos, tuple) else (eos,)


def qwen(model_type: str, **fields) -> ModelConfig:
  """A ModelConfig with the family defaults of `model_type` (bias and q/k norm flags) filled in."""
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
  family = {"qwen2": dict(qkv_bias=True, o_bias=False, qk_norm=False),
            "qwen3": dict(qkv_bias=False, o_bias=False, qk_norm=True)}[model_type]
  if "head_dim" not in fields and fields.get("num_heads"):
    fields["head_dim"] = fields["hidden_size"] // fields["num_heads"]
  return ModelConfig(model_type=model_type, **{**family, **fields})


def validate(cfg: ModelConfig) -> None:
  """Raises ValueError naming the field(s) and values of the first inconsistency found."""
  if cfg.model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"unsupported model_type {cfg.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
  for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
               "num_kv_heads", "head_dim"):
    value = getattr(cfg, name)
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if cfg.num_heads % cfg.num_kv_heads:
    raise ValueError(f"num_attention_heads ({cfg.num_heads}) must be a multiple of "
                     f"num_key_value_heads ({cfg.num_kv_heads})")
  if cfg.head_dim % 2:
    raise ValueError(f"head_dim ({cfg.head_dim}) must be even for rotary embeddings")
  if cfg.rope_theta <= 0:
    raise ValueError(f"rope_theta must be positive, got {cfg.rope_theta}")
  for name in ("dtype", "param_dtype"):
    if getattr(cfg, name) not in DTYPES:
      raise ValueError(f"{name} must be one of {DTYPES}, got {getattr(cfg, name)!r}")
  if cfg.remat not in REMAT_POLICIES:
    raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {cfg.remat!r}")
  if not isinstance(cfg.attention_chunk, int) or cfg.attention_chunk < 0:
    raise ValueError(f"attention_chunk must be an integer >= 0 (0: no chunks), got {cfg.attention_chunk!r}")
  if isinstance(cfg.scan_unroll, bool) or not isinstance(cfg.scan_unroll, int) or cfg.scan_unroll < 1:
    raise ValueError(f"scan_unroll must be an integer >= 1 (layers per scan iteration), got {cfg.scan_unroll!r}")


def _rope_theta(hf: Mapping[str, Any], where: str) -> float:
  """rope_theta from either layout: hub (top-level `rope_theta`, `rope_scaling`) or
  transformers 5 (`rope_parameters: {rope_type, rope_theta}`); only the default RoPE type."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
  if rope_type != "default":
    raise ValueError(f"{where}: unsupported rope type {rope_type!r}; only 'default' RoPE is implemented")
  theta = params.get("rope_theta", hf.get("rope_theta"))
  if theta is None:
    raise ValueError(f"{where}: neither rope_theta nor rope_parameters.rope_theta is set")
  return float(theta)


def from_hf_dict(hf: Mapping[str, Any], where: str = "config.json", **numerics) -> ModelConfig:
  """ModelConfig from a parsed Hugging Face config.json (qwen2 or qwen3).

  Args:
    hf: the parsed JSON.
    where: how to name the source in error messages (e.g. its path).
    **numerics: dtype / param_dtype / remat / attention_chunk / scan_unroll.
  """
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{where}: unsupported model_type {model_type!r}; supported: "
                     f"{', '.join(SUPPORTED_MODEL_TYPES)}")
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
  missing = [k for k in required if k not in hf]
  if missing:
    raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
  if hf.get("use_sliding_window", False):
    raise ValueError(f"{where}: use_sliding_window=true is not supported")
  heads = hf["num_attention_heads"]
  kv_heads = hf.get("num_key_value_heads") or heads
  head_dim = hf.get("head_dim")
  if head_dim is None:
    if not heads or hf["hidden_size"] % heads:
      raise ValueError(f"{where}: hidden_size ({hf['hidden_size']}) is not a multiple of "
                       f"num_attention_heads ({heads}) and head_dim is not given")
    head_dim = hf["hidden_size"] // heads
  if not kv_heads or heads % kv_heads:
    raise ValueError(f"{where}: num_attention_heads ({heads}) must be a multiple of "
                     f"num_key_value_heads ({kv_heads})")
  attention_bias = bool(hf.get("attention_bias", False))
  eos = hf.get("eos_token_id")
  return ModelConfig(
      model_type=model_type,
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=kv_heads,
      head_dim=head_dim,
      rope_theta=_rope_theta(hf, where),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=True if model_type == "qwen2" else attention_bias,
      o_bias=False if model_type == "qwen2" else attention_bias,
      qk_norm=model_type == "qwen3",
      max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
      **numerics)


def to_hf_dict(cfg: ModelConfig) -> dict[str, Any]:
  """The config.json dict (hub layout, top-level rope_theta) that transformers loads."""
  if cfg.model_type == "qwen2" and (not cfg.qkv_bias or cfg.o_bias or cfg.qk_norm):
    raise ValueError("a qwen2 config.json cannot express qkv_bias=False, o_bias=True or qk_norm=True")
  if cfg.model_type == "qwen3" and (cfg.qkv_bias != cfg.o_bias or not cfg.qk_norm):
    raise ValueError("a qwen3 config.json needs qkv_bias == o_bias (attention_bias) and qk_norm=True")
  eos = cfg.eos_token_id
  out = {
      "architectures": [_ARCHITECTURES[cfg.model_type]],
      "model_type": cfg.model_type,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_position_embeddings,
      "rms_norm_eps": cfg.rms_norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": None,
      "tie_word_embeddings": cfg.tie_word_embeddings,
      "use_sliding_window": False,
      "attention_dropout": 0.0,
      "torch_dtype": cfg.param_dtype,
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
  }
  if cfg.model_type == "qwen3":
    out["attention_bias"] = cfg.qkv_bias
  return out


def read_hf_config(path: str, **numerics) -> ModelConfig:
  """Parses `path` (a config.json file) into a ModelConfig; errors name the file."""
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"no config.json at {path}") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  return from_hf_dict(hf, where=path, **numerics)
