"""Where the RL loop's rollouts run (`config.rollout`): the in-process JAX engine, or SGLang-compatible
servers behind the KV-budget router, with the weights synced to them after every update.

  backend = make_backend(config, workdir, cfg, mesh_rules, runtime, vocab_limit)
  with backend.stage(params, max_length, version=k):       # once per curriculum stage
    out = runtime.run(rollout_problems(backend.engine(), ...))
    seconds = backend.sync(new_params, version=k + 1)      # after each update

config.rollout:
  backend: "jax" (in process, lockstep: bitwise repeatable) or "sglang";
  urls: running servers (real SGLang with `--skip-tokenizer-init` or `rstar-serve`), their
    context at least the stage's prompt + budget; or
  local_servers: N > 0 starts N `rstar-serve` processes on this machine per stage (context
    max_length, `rl.num_slots` slots each, the run's seed) and stops them at its end, also on failure;
  api_key_file: the servers' API key; weight_sync: "disk" (each version written to
    weight_sync_dir, "": WORKDIR/weight_sync, readable by every server, which loads it) or "push"
    (sent over HTTP in chunks: `rstar-serve` servers only, no shared filesystem, no file; local
    servers still start from a written version); sync_dtype: the dtype versions are sent in
    ("": the parameter dtype; "bfloat16" halves an fp32 policy's bytes for bf16 servers);
  expected_response_tokens: the response a new rollout is expected to generate: with its prompt,
    the free KV a server needs to take it (`rollout.ResponseEstimate`): "mean" (the mean response
    finished so far), "budget" (the whole budget) or a number of tokens.
Weight versions: version v is the policy after v RL updates; the servers load it (from
weight_sync_dir/v{v:06d}, or pushed; `rollout.weight_sync`) and tag every sample with "v", so a
rollout's `weight_versions` name the policy that produced it.
"""
import contextlib
import os
import time

import ml_collections

from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import local_servers as local_servers_lib
from rstar_jax.rollout import weight_sync
from rstar_jax.sandbox import processes
from rstar_jax.train import distributed

BACKENDS = ("jax", "sglang")
SYNC_DTYPES = ("", "bfloat16", "float32", "float16")  # "": the parameter dtype


def expected_response_tokens(value) -> str | int:
  """config.rollout.expected_response_tokens as `rollout.Router` takes it: "mean", "budget" or an
  int (a number given as a string on the command line, where the key is a string, becomes one);
  ValueError for anything else."""
  if isinstance(value, str) and value.isdigit():
    value = int(value)
  rollout.ResponseEstimate(value)  # raises on a bad mode
  return value


class InProcessBackend:
  """The JAX engine in this process (lockstep), its weights swapped in place."""

  def __init__(self, config: ml_collections.ConfigDict, cfg: models.ModelConfig, mesh_rules: models.MeshRules,
               vocab_limit: int):
    self._config, self._cfg, self._mesh_rules, self._vocab_limit = config, cfg, mesh_rules, vocab_limit
    self._engine: rollout.JaxEngine | None = None

  def build_engine(self, params, max_length: int) -> rollout.JaxEngine:
    """A JAX engine of the run's policy (`rl.num_slots` slots, the run's seed)."""
    return rollout.JaxEngine(self._cfg, params, num_slots=self._config.rl.num_slots, max_length=max_length,
                             eos_token_ids=self._cfg.eos_token_ids, seed=self._config.seed,
                             vocab_limit=self._vocab_limit, mesh_rules=self._mesh_rules)

  @contextlib.contextmanager
  def stage(self, params, max_length: int, version: int):
    del version  # the in-process engine's samples carry no version
    self._engine = self.build_engine(params, max_length)
    try:
      yield self
    finally:
      self._engine = None

  def engine(self) -> rollout.AsyncJaxEngine:
    return rollout.AsyncJaxEngine(self._engine, lockstep=True)

  def sync(self, params, version: int) -> float:
    del version
    start = time.monotonic()
    self._engine.set_params(params)
    return time.monotonic() - start


class ServerBackend:
  """SGLang-compatible servers (given or started here) behind `rollout.Router` (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, cfg: models.ModelConfig,
               runtime: rollout.RolloutRuntime, vocab_limit: int):
    self._config, self._cfg, self._runtime, self._vocab_limit = config, cfg, runtime, vocab_limit
    self._sync_dir = config.rollout.weight_sync_dir or os.path.join(workdir, "weight_sync")
    self._sync_dtype = config.rollout.sync_dtype or None
    self._log_dir = workdir
    self._api_key = processes.read_api_key(config.rollout.api_key_file)
    self._router: rollout.Router | None = None

  @contextlib.contextmanager
  def stage(self, params, max_length: int, version: int):
    """Servers serving version `version` of `params` for the block. In a multi-process run every
    process enters it (the weights are gathered from all) and process 0 drives the servers."""
    local_servers = self._config.rollout.local_servers
    with contextlib.ExitStack() as stack:
      if distributed.is_writer():
        urls = list(self._config.rollout.urls)
        if local_servers:  # they start from a written version (multi-process runs have none)
          args = ["--num-slots", str(self._config.rl.num_slots), "--max-length", str(max_length),
                  "--seed", str(self._config.seed), "--vocab-limit", str(self._vocab_limit),
                  "--weight-version", str(version)]
          if self._config.rollout.api_key_file:
            args += ["--api-key-file", self._config.rollout.api_key_file]
          servers = stack.enter_context(local_servers_lib.LocalServers(
              weight_sync.write_version(self._cfg, params, self._sync_dir, version, dtype=self._sync_dtype),
              local_servers, args, log_dir=self._log_dir))
          urls = servers.urls
        self._router = rollout.Router.from_urls(
            urls, api_key=self._api_key, eos_token_ids=self._cfg.eos_token_ids,
            expected_response_tokens=expected_response_tokens(self._config.rollout.expected_response_tokens))
        stack.callback(lambda: self._runtime.run(self._router.close()))
        self._runtime.run(self._router.__aenter__())
      if not local_servers:
        self.sync(params, version)
      yield self

  def engine(self) -> rollout.Router:
    """The router over the servers (process 0; None on the other processes of a multi-process run)."""
    return self._router

  def sync(self, params, version: int) -> float:
    """Sends version `version` to every server (written and loaded, or pushed); the seconds it took."""
    return self._runtime.run(self.sync_async(params, version))

  async def sync_async(self, params, version: int, abort_all_requests: bool = False) -> float:
    """`sync` from inside the runtime's loop; `abort_all_requests`: the servers abort the turns in
    flight (the client resubmits them, to continue on the new weights) instead of draining them."""
    return await weight_sync.send_version(
        self._cfg, params, self._router.engines if distributed.is_writer() else [], version,
        self._config.rollout.weight_sync, self._sync_dir, dtype=self._sync_dtype, abort_all_requests=abort_all_requests)


def make_backend(config: ml_collections.ConfigDict, workdir: str, cfg: models.ModelConfig,
                 mesh_rules: models.MeshRules, runtime: rollout.RolloutRuntime, vocab_limit: int):
  """The backend config.rollout.backend names."""
  if config.rollout.backend == "jax":
    return InProcessBackend(config, cfg, mesh_rules, vocab_limit)
  return ServerBackend(config, workdir, cfg, runtime, vocab_limit)
