"""`rstar-serve`: the JAX engine behind SGLang's HTTP API (`rollout.server`), for rollouts in other processes.

  rstar-serve --checkpoint runs/tiny/policy --port 30000 --num-slots 32 --max-length 4096

The checkpoint is a Hugging Face directory (config.json + safetensors, as the trainer's policies
and weight syncs are written). With its tokenizer.json the server also takes `text` and answers
`text`; without, it serves `input_ids` only, as SGLang does with `--skip-tokenizer-init`. Requests
end at the config's eos_token_id (plus each request's stop_token_ids). The weight-update route loads
whatever path it is given, so binding beyond loopback needs `--api-key` (or `--api-key-file`);
clients then send `Authorization: Bearer KEY`. Prints `rstar-serve: ready on http://HOST:PORT` once
the warm-up generation has compiled.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from aiohttp import web

from rstar_jax import chat
from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import server as server_lib
from rstar_jax.sandbox import processes

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Hugging Face checkpoint directory to serve.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
_PORT = flags.DEFINE_integer("port", 30000, "Port to bind.")
_NUM_SLOTS = flags.DEFINE_integer("num-slots", 32, "Sequences decoded at once (max_running_requests).")
_MAX_LENGTH = flags.DEFINE_integer("max-length", 4096, "Context length: prompt plus generated tokens.")
_NUM_DEVICES = flags.DEFINE_integer("num-devices", 1, "Devices the model is sharded over (tensor parallel).")
_PREFILL_CHUNK = flags.DEFINE_integer("prefill-chunk", 256, "Prompt tokens written per slot and step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
_SEED = flags.DEFINE_integer("seed", 0, "The engine's sampling seed (requests' sampling_seed fold into it).")
_VOCAB_LIMIT = flags.DEFINE_integer("vocab-limit", 0, "Ids at or above it are never sampled (0: the tokenizer's "
                                    "size if the checkpoint has one, else the whole vocabulary).")
_WEIGHT_VERSION = flags.DEFINE_string("weight-version", "default", "Version reported with the first weights.")
_MAX_QUEUED = flags.DEFINE_integer("max-queued-requests", 1024, "Waiting requests beyond which /generate answers 503.")
_API_KEY = flags.DEFINE_string("api-key", None, "Required as `Authorization: Bearer KEY` (all routes but /health).")
_API_KEY_FILE = flags.DEFINE_string("api-key-file", None, "File holding the API key (kept out of `ps`).")
flags.mark_flag_as_required("checkpoint")


def _api_key() -> str | None:
  if _API_KEY_FILE.value:
    return processes.read_api_key(_API_KEY_FILE.value)
  return _API_KEY.value


def _check_flags(api_key: str | None) -> None:
  if _VOCAB_LIMIT.value < 0:
    raise app.UsageError(f"--vocab-limit={_VOCAB_LIMIT.value} must be >= 0")
  for name, value in (("num-slots", _NUM_SLOTS.value), ("prefill-chunk", _PREFILL_CHUNK.value),
                      ("num-devices", _NUM_DEVICES.value), ("max-queued-requests", _MAX_QUEUED.value)):
    if value < 1:
      raise app.UsageError(f"--{name}={value} must be a positive integer")
  if _MAX_LENGTH.value < 2:
    raise app.UsageError(f"--max-length={_MAX_LENGTH.value} must be at least 2")
  if _NUM_DEVICES.value > jax.device_count():
    raise app.UsageError(f"--num-devices={_NUM_DEVICES.value} but this host has {jax.device_count()} devices")
  if not processes.is_loopback(_HOST.value) and not api_key:
    raise app.UsageError(f"--host={_HOST.value} is beyond loopback: give --api-key or --api-key-file "
                         "(the weight-update route loads any path it is given)")
  if not os.path.isfile(os.path.join(_CHECKPOINT.value, "config.json")):
    raise app.UsageError(f"--checkpoint={_CHECKPOINT.value!r} holds no config.json (a Hugging Face directory)")


def build_server(checkpoint: str, *, num_slots: int, max_length: int, num_devices: int = 1,
                 prefill_chunk: int = 256, dtype: str = "float32", seed: int = 0, vocab_limit: int = 0,
                 weight_version: str = "default", api_key: str | None = None,
                 max_queued_requests: int = 1024) -> server_lib.GenerationServer:
  """The server for `checkpoint` (module docstring); call inside the event loop that will serve it."""
  mesh_rules = models.MeshRules(models.make_mesh(tensor=num_devices, devices=jax.devices()[:num_devices]))
  cfg, params = models.load_hf(checkpoint, dtype=jnp.dtype(dtype), mesh_rules=mesh_rules)
  tokenizer = (chat.HFTokenizer.from_dir(checkpoint)
               if os.path.isfile(os.path.join(checkpoint, "tokenizer.json")) else None)
  eos = server_lib.served_eos_ids(cfg.eos_token_ids, tokenizer)
  vocab_limit = vocab_limit or (tokenizer.vocab_size if tokenizer is not None else None)
  engine = rollout.JaxEngine(cfg, params, num_slots=num_slots, max_length=max_length, eos_token_ids=eos,
                             prefill_chunk=prefill_chunk, seed=seed, mesh_rules=mesh_rules, vocab_limit=vocab_limit)
  return server_lib.GenerationServer(
      rollout.AsyncJaxEngine(engine), model_path=checkpoint, tokenizer=tokenizer,
      weights=server_lib.WeightLoader(cfg, mesh_rules), weight_version=weight_version,
      api_key=api_key, max_queued_requests=max_queued_requests)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  api_key = _api_key()
  _check_flags(api_key)

  async def make_app():
    try:
      server = build_server(_CHECKPOINT.value, num_slots=_NUM_SLOTS.value, max_length=_MAX_LENGTH.value,
                            num_devices=_NUM_DEVICES.value, prefill_chunk=_PREFILL_CHUNK.value, dtype=_DTYPE.value,
                            seed=_SEED.value, vocab_limit=_VOCAB_LIMIT.value, weight_version=_WEIGHT_VERSION.value, api_key=api_key,
                            max_queued_requests=_MAX_QUEUED.value)
    except ValueError as e:
      sys.exit(f"rstar-serve: {e}")
    return server.app

  url = f"http://{_HOST.value}:{_PORT.value}"
  web.run_app(make_app(), host=_HOST.value, port=_PORT.value, access_log=None,
              handler_cancellation=True,  # a client that hangs up aborts its request
              print=lambda _: print(f"rstar-serve: ready on {url}", flush=True))


def run():
  """Parses the flags and serves (the `rstar-serve` console script comes here through serve_cli)."""
  app.run(main)


if __name__ == "__main__":
  run()
