"""Logical axis names, the rules table that maps them onto a (data, fsdp, tensor) mesh, and helpers.

The model names only logical axes:
  batch   sequences of a batch             embed   the residual width E
  length  token positions (T, or S cached) mlp     the SwiGLU width F
  heads   query / key-value heads (H, K)   kv      the per-head width D
  vocab   the vocabulary V                 layers  the stacked-layer axis of scanned blocks
`layers` is an eighth name beside DESIGN's seven: blocks are scanned (compile time independent
of depth), so every block parameter carries a leading layer axis, which is never sharded.

A rules table is a sequence of (logical name, mesh axes or None). For each array axis the first
rule whose mesh axes are still unused in that array applies (flax's semantics), so `embed` shards
parameters over fsdp while activations, whose batch already uses fsdp, keep embed unsharded.
"""
import dataclasses
from typing import Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "vocab", "layers")

# Data and FSDP parallel over the batch; FSDP shards parameters along embed; tensor parallel
# over heads, the MLP width and the vocabulary (Megatron-style column/row split).
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
)


@dataclasses.dataclass(frozen=True)
class MeshRules:
  """A device mesh and the rules table that maps logical axis names onto it (hashable)."""
  mesh: Mesh
  rules: tuple[tuple[str, str | tuple[str, ...] | None], ...] = DEFAULT_RULES

  def __post_init__(self):
    object.__setattr__(self, "rules", normalize_rules(self.rules))

  def spec(self, logical_axes: Sequence[str | None]) -> PartitionSpec:
    return nn.logical_to_mesh_axes(tuple(logical_axes), self.rules)

  def sharding(self, logical_axes: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical_axes))


def normalize_rules(rules) -> tuple:
  """Rules as a tuple of (name, mesh axes) with lists turned into tuples; checks every name."""
  out = []
  for i, rule in enumerate(rules):
    if len(rule) != 2:
      raise ValueError(f"sharding rule #{i} {rule!r} is not a (logical name, mesh axes) pair")
    name, axes = rule
    if name not in LOGICAL_AXES:
      raise ValueError(f"sharding rule #{i}: unknown logical axis {name!r}; known: {LOGICAL_AXES}")
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    for axis in (axes if isinstance(axes, tuple) else (axes,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"sharding rule #{i} ({name}): unknown mesh axis {axis!r}; known: {MESH_AXES}")
    out.append((name, axes))
  missing = set(LOGICAL_AXES) - {name for name, _ in out}
  if missing:
    raise ValueError(f"sharding rules have no rule for logical axes {sorted(missing)}")
  return tuple(out)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes over `num_devices` devices; one size may be -1 (the rest).

  Raises:
    ValueError naming the sizes and the device count when they do not multiply to it.
  """
  if num_devices < 1:
    raise ValueError(f"a mesh needs at least one device, got {num_devices}")
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1 or any(s < 1 and s != -1 for s in shape):
    raise ValueError(f"mesh sizes must be positive (one may be -1, the rest): data={data} fsdp={fsdp} tensor={tensor}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split as data={data} fsdp={fsdp} tensor={tensor}")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"mesh data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} does not match {num_devices} devices")
  return tuple(shape)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all). One size may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(data, fsdp, tensor, len(devices))
  try:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def constrain(x: jax.Array, logical_axes: Sequence[str | None], mesh_rules: MeshRules | None):
  """with_sharding_constraint by logical names; the identity when there is no mesh."""
  if mesh_rules is None:
    return x
  return jax.lax.with_sharding_constraint(x, mesh_rules.sharding(logical_axes))


def check_divisible(mesh_rules: MeshRules, shape: Sequence[int], logical_axes: Sequence[str | None],
                    what: str) -> None:
  """Raises ValueError when an axis of `shape` does not divide evenly over its mesh axes."""
  spec = mesh_rules.spec(logical_axes)
  for size, name, axes in zip(shape, logical_axes, tuple(spec) + (None,) * len(shape)):
    if axes is None:
      continue
    parts = int(np.prod([mesh_rules.mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
    if size % parts:
      raise ValueError(f"{what}: axis {name!r} of size {size} does not divide over mesh axes "
                       f"{axes} ({parts} devices)")
