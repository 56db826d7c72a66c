"""Weight sync with versions: the trainer writes its policy where the servers can read it, then
each server loads it (`/update_weights_from_disk`), drops its prefix cache and tags the samples
that follow with the version (SGLANG_API.md §3). To `rstar-serve` servers the trainer can instead
push the tensors over HTTP, with no shared filesystem and no file written or read back.

  path = write_version(cfg, params, "runs/x/weights", version=7)    # runs/x/weights/v000007
  await sync_servers(router.engines, path, "7")
  await push_version(cfg, params, router.engines, "7")              # rstar-serve only
  await send_version(cfg, params, router.engines, 7, mode, "runs/x/weights")  # either

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
from rstar_jax.rollout import server as server_lib
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


PUSH_CHUNK_BYTES = 256 << 20
MODES = ("disk", "push")


async def send_version(cfg: models.ModelConfig, params, engines: Sequence[sglang_client.SGLangEngine],
                       version: int, mode: str, root: str, dtype=None, abort_all_requests: bool = False) -> float:
  """Version `version` of `params` to every server, by `mode`: "disk" writes root/vNNNNNN
  (`write_version`) and has each server load it (`sync_servers`), "push" sends it over HTTP
  (`push_version`); returns the seconds it took. Every process of a multi-process run calls it,
  with `engines` empty on all but process 0."""
  start = time.monotonic()
  if mode == "push":
    await push_version(cfg, params, engines, str(version), dtype=dtype, abort_all_requests=abort_all_requests)
  elif mode == "disk":
    path = await asyncio.to_thread(write_version, cfg, params, root, version, dtype=dtype)
    await sync_servers(engines, path, str(version), abort_all_requests)
  else:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return time.monotonic() - start


async def push_version(cfg: models.ModelConfig, params, engines: Sequence[sglang_client.SGLangEngine],
                       version: str, dtype=None, chunk_bytes: int = PUSH_CHUNK_BYTES,
                       abort_all_requests: bool = False) -> float:
  """Sends `params` to every server as safetensors blobs of HF-named tensors of about
  `chunk_bytes` each (`/upload_weights`, streamed from the gathered arrays without a copy; the
  next chunk is gathered while one travels), then has each swap them in (`/update_weights_from_upload`,
  which drains or aborts as `sync_servers`); returns the seconds it took. dtype: as `write_version`'s.
  In a multi-process run every process calls it (the gathers are collective), with `engines` empty
  on all but process 0, which gathers every chunk even after a failed upload before raising.

  Raises:
    sglang_client.ServerError: a server refused the tensors; a server without the upload route
      (SGLang) is named, with the way that works for it.
    sglang_client.ServerUnavailable: a server did not answer.
    ValueError: a tensor larger than one upload may be (`server.MAX_UPLOAD_BYTES`).
  """
  start = time.monotonic()
  sending: list[asyncio.Task] = []
  error = None
  groups = models.hf_tensor_groups(cfg, params, chunk_bytes, dtype)
  while (group := await asyncio.to_thread(next, groups, None)) is not None:
    if error is not None or not engines:
      continue  # the other processes' gathers still need this one
    parts = models.safetensors_parts(group)
    size = sum(len(part) for part in parts)
    if size > server_lib.MAX_UPLOAD_BYTES:
      error = ValueError(f"tensor {next(iter(group))!r} is {size} bytes, more than one upload may be "
                         f"({server_lib.MAX_UPLOAD_BYTES}): sync from disk (config.rollout.weight_sync='disk')")
      await _cancel(sending)
      continue
    try:
      await _finish(sending)
    except (sglang_client.ServerError, sglang_client.ServerUnavailable) as e:
      error = e
      continue
    sending = [asyncio.ensure_future(_upload(engine, parts, version)) for engine in engines]
  if error is None:
    await _finish(sending)
  else:
    raise error
  await asyncio.gather(*(engine.update_weights_from_upload(version, abort_all_requests) for engine in engines))
  return time.monotonic() - start


async def _finish(tasks: list[asyncio.Task]) -> None:
  """Waits for every task; on the first error cancels the others and raises it."""
  try:
    await asyncio.gather(*tasks)
  except BaseException:
    await _cancel(tasks)
    raise


async def _cancel(tasks: list[asyncio.Task]) -> None:
  for task in tasks:
    task.cancel()
  await asyncio.gather(*tasks, return_exceptions=True)


async def _upload(engine: sglang_client.SGLangEngine, parts: list, version: str) -> None:
  try:
    await engine.upload_weights(parts, version)
  except sglang_client.ServerError as e:
    if e.status == 404:
      raise sglang_client.ServerError(engine.url, 404, "no /upload_weights route: only rstar-serve takes pushed "
                                      "weights; sync an SGLang server from disk (config.rollout.weight_sync="
                                      "'disk')") from None
    raise
