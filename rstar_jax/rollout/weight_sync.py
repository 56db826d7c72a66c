"""Weight sync with versions: the trainer writes its policy where the servers can read it, then
each server loads it (`/update_weights_from_disk`), drops its prefix cache and tags the samples
that follow with the version (SGLANG_API.md §3).

  path = write_version(cfg, params, "runs/x/weights", version=7)    # runs/x/weights/v000007
  await sync_servers(router.engines, path, "7")

A version directory is written whole under a temporary name and renamed into place, so a server
never reads a half-written one; only the newest `keep` versions stay on disk. With
`dtype="bfloat16"` an fp32 policy is written at half the bytes (cast on device, layer by layer).
"""
import asyncio
import os
import shutil
import time
from typing import Sequence

import jax

from rstar_jax import models
from rstar_jax.rollout import sglang_client


def version_dir(root: str, version: int) -> str:
  return os.path.join(root, f"v{version:06d}")


def write_version(cfg: models.ModelConfig, params, root: str, version: int, keep: int = 2, dtype=None) -> str:
  """Writes `params` as a Hugging Face directory root/vNNNNNN (atomically); returns its path.

  dtype: the written tensors' dtype (None: the parameter dtype; bfloat16 halves an fp32 policy's
  write for servers that compute in bf16). In a multi-process run every process calls it (the
  parameters are gathered one layer at a time) and process 0 writes.
  """
  final = version_dir(root, version)
  partial = final + ".partial"
  writer = jax.process_index() == 0
  if writer:
    shutil.rmtree(partial, ignore_errors=True)
  models.save_hf(cfg, params, partial, dtype=dtype)
  if not writer:
    return final
  shutil.rmtree(final, ignore_errors=True)
  os.replace(partial, final)
  versions = sorted(d for d in os.listdir(root) if d.startswith("v") and d[1:].isdigit())
  for old in versions[:-keep]:
    shutil.rmtree(os.path.join(root, old), ignore_errors=True)
  return final


async def sync_servers(engines: Sequence[sglang_client.SGLangEngine], path: str, version: str,
                       abort_all_requests: bool = False) -> float:
  """Loads `path` on every server at once (each waits for its requests in flight unless
  `abort_all_requests`); returns the seconds until the last one answered.

  Raises:
    sglang_client.ServerError: a server refused the weights (its message names why).
  """
  start = time.monotonic()
  await asyncio.gather(*(engine.update_weights_from_disk(path, version, abort_all_requests)
                         for engine in engines))
  return time.monotonic() - start
