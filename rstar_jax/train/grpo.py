"""The GRPO-RoC step loop through the curriculum stages (PAPER.md §5.1, §7).

  trainer = GrpoTrainer(config, workdir, cfg, tokenizer, chat_format, mesh_rules, harness, runtime,
                        scorer, step_offset, on_stage_end)
  state, summary = trainer.run(state, meta)

One RL step k (global step step_offset + k + 1), in the order of PAPER.md §5.1:
  1. the next `data.prompts_per_step` prompts of the stage's resumable stream;
  2. `rl.num_rollouts` agent rollouts per prompt on `config.rollout`'s backend (the in-process
     JAX engine in lockstep, so the step repeats bitwise; or rollout servers behind the router,
     `train/rollout_backend.py`) with real sandbox tool calls; each rollout is scored the moment it
     ends, while the others still decode (`time/score_hidden_fraction` is the share of the
     scoring time that overlapped generation);
  3. `train.rl.RLUpdater`: equal-reward groups dropped, RoC keeps `rl.keep` per group,
     advantages, packing, `rl.updates_per_step` optimizer steps;
  4. the new weights to the engine: swapped in place, or written as version k + 1 and loaded by
     every server (cached prefixes dropped either way);
  5. one metrics row (module `metrics` names below) and, every `checkpoint.rl_every_steps` steps
     and at each stage end, a checkpoint holding the RL step, the stage and its stream position.
Rollout ids are "{k}/{position}/{problem id}/s{sample}": the step and the batch position make
them unique within a batch (a batch that straddles two epochs may hold a problem twice) and give
a problem met again in a later epoch fresh samples.

Bounded staleness (`rl.max_staleness` = s >= 1, rollout servers only): the rollouts of step j
start as soon as the policy has j - s updates, so while step k's update runs the servers already
generate steps k+1..k+s; after each update the new version goes to the servers with
`abort_all_requests` (turns in flight are resubmitted by the client and continue on the new
weights). A rollout's staleness is k minus the oldest version among its tokens; a group holding one
staler than s is dropped (`rollout/stale_groups_dropped`; `rollout/staleness_mean`); the update's
old log-probs are the sampler's (`rl.use_sampler_logprobs`, required). `time/rollout_wait_s` is
the time the trainer waited for step k's rollouts (all of `time/rollout_s` when synchronous). Not
bitwise repeatable; a checkpoint holds the stream position after the step's own batch, so a resumed
run generates the prefetched batches again.

Stages: each has its own prompt stream (seed `data.seed + stage index`), response budget and
turn limit; a stage with `reset_optimizer` re-initializes the optimizer state (warm-up
restarted) before its first step, decided from the RL step (not an update count, which a step
without surviving groups does not advance); a stage with `hard_filter_samples` n starts by rolling
the current policy n times on each of its problems and keeps those not solved n/n
(`data.filter_hard_problems`, cached in workdir/data/hard_{stage}.jsonl, resumable).
`on_stage_end(stage, state)` runs after a stage's last step (the run driver saves the policy and
evaluates it there), before the next stage starts; it must be idempotent, since a run resumed
from a stage's last checkpoint calls it again.

Faults: sandbox failures reach the model as `Error when executing tool: ...` (status
`sandbox_error`); a step whose share of such calls exceeds `rl.max_sandbox_error_fraction` stops
the run with a message naming the step and the newest checkpoint.

Metrics per step (besides the updater's `reward/*`, `down_sampling/*`, `reject_equal_reward/*`,
`roc_*`, `loss/policy`, `policy/*`, `grad/norm`, `optim/lr`, `update/*`): stage, rl/step,
rl/stage_index, rollout/* (`evaluate.rollout_stats`: tool calls, tool-error ratios of all and of
correct rollouts, response length mean/max, truncation, finish reasons), rollout/kl_sampler_k3,
sandbox/error_calls, data/epoch, rollout/off_version_samples (rollouts with tokens of another
weight version than the step's), time/{rollout_s, rollout_wait_s, score_s, score_hidden_fraction,
update_s, weight_sync_s, step_s}, throughput/response_tokens_per_s.
"""
import asyncio
import dataclasses
import json
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax import rewards
from rstar_jax import rollout
from rstar_jax.train import distributed
from rstar_jax.train import evaluate
from rstar_jax.train import harness as harness_lib
from rstar_jax.train import optim
from rstar_jax.train import progress
from rstar_jax.train import rl as rl_update
from rstar_jax.train import rollout_backend

StageEnd = Callable[[data.Stage, optim.TrainState], None]


def tool_environment(config: ml_collections.ConfigDict) -> rollout.ToolEnvironment:
  """The tool environment of SFT traces, rollouts and evaluations (config.env)."""
  return rollout.ToolEnvironment.from_dict(config.env)


def agent_config(config: ml_collections.ConfigDict, chat_format: chat.ChatFormat,
                 max_response_tokens: int, max_turns: int) -> rollout.AgentConfig:
  """The rollouts' agent settings for a stage's budget and turn limit (config.rl.*, config.env)."""
  rl = config.rl
  return rollout.AgentConfig(
      max_response_length=max_response_tokens, max_assistant_turns=max_turns,
      environment=tool_environment(config),
      chat_format=chat_format, fixed_execution_time_s=rl.fixed_execution_time_s,
      sampling=rollout.SamplingParams(max_new_tokens=None, temperature=rl.temperature, top_p=rl.top_p))


def check_sandbox_errors(statuses, limit: float, rl_step: int, newest_checkpoint: int) -> None:
  """Raises RuntimeError when more than `limit` of a step's tool calls failed in the sandbox
  (status `sandbox_error`: the service died or stopped answering), naming the step and the
  checkpoint a rerun resumes from."""
  failed = sum(status == "sandbox_error" for status in statuses)
  if statuses and failed / len(statuses) > limit:
    raise RuntimeError(
        f"the sandbox failed {failed} of {len(statuses)} tool calls at RL step {rl_step} (more than "
        f"config.rl.max_sandbox_error_fraction={limit}); is it running? The newest checkpoint is "
        f"{newest_checkpoint}; rerun the same command to resume once it answers")


class GrpoTrainer:
  """Runs the RL steps of every curriculum stage (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, cfg: models.ModelConfig,
               tokenizer: chat.Tokenizer, chat_format: chat.ChatFormat, mesh_rules: models.MeshRules,
               harness: harness_lib.StepHarness, runtime: rollout.RolloutRuntime, scorer: rewards.Scorer,
               step_offset: int, on_stage_end: StageEnd):
    self.config, self.workdir, self.cfg = config, workdir, cfg
    self.tokenizer, self.chat_format, self.mesh_rules = tokenizer, chat_format, mesh_rules
    self.harness, self.runtime, self.scorer = harness, runtime, scorer
    self.step_offset, self.on_stage_end = step_offset, on_stage_end
    self.curriculum = data.curriculum_from_config(config.data.stages)
    self.optimizer = optim.make_optimizer(config.rl.optim)
    self._decontam = data.decontam_index(config.data)
    self._updater: rl_update.RLUpdater | None = None
    self.backend = rollout_backend.make_backend(config, workdir, cfg, mesh_rules, runtime, tokenizer.vocab_size)

  # ------------------------------------------------------------------ state
  def initial_state(self, params) -> optim.TrainState:
    """Step `step_offset`, a fresh RL optimizer over `params` (e.g. the SFT policy's)."""
    state = optim.init_train_state(params, self.optimizer, self.config.seed, self.mesh_rules)
    return state.replace(step=state.step + self.step_offset)

  def _reset_optimizer(self, state: optim.TrainState) -> optim.TrainState:
    fresh = optim.init_train_state(state.params, self.optimizer, self.config.seed, self.mesh_rules)
    return state.replace(opt_state=fresh.opt_state)

  def _updater_for(self, state: optim.TrainState) -> rl_update.RLUpdater:
    if self._updater is None:
      self._updater = rl_update.RLUpdater(self.cfg, self.config.rl, self.optimizer, self.mesh_rules, state)
    return self._updater

  # ------------------------------------------------------------------ data
  def _stage_problems(self, stage: data.Stage, state: optim.TrainState) -> list[data.Problem]:
    specs = [spec.replace("{workdir}", self.workdir) for spec in stage.train_files]
    problems, _ = data.train_problems(self.config.data, specs, f"{stage.field}.train_files",
                                      index=self._decontam)
    if not stage.hard_filter_samples:
      return problems
    out = os.path.join(self.workdir, "data", f"hard_{stage.name}.jsonl")
    if distributed.broadcast_from_zero(not os.path.exists(out)):
      logging.info("stage %s: hard filter, %d problems x %d rollouts of the current policy", stage.name,
                   len(problems), stage.hard_filter_samples)
      max_length = self._max_prompt_tokens(problems) + stage.max_response_tokens
      agent = agent_config(self.config, self.chat_format, stage.max_response_tokens, stage.max_turns)
      seed = self.config.seed + 1000 * (stage.index + 1)
      if isinstance(self.backend, rollout_backend.ServerBackend):  # on the servers, driven by process 0
        with self.backend.stage(state.params, max_length, version=stage.first_step):
          distributed.on_process_zero(lambda: data.filter_hard_problems(
              problems, rollout.policy_rollout_fn(self.backend.engine(), self.tokenizer, agent, self.scorer,
                                                  self.runtime, seed=seed),
              stage.hard_filter_samples, out, chunk_size=self.config.rl.hard_filter_chunk), "the hard filter")
      else:
        in_process = rollout_backend.InProcessBackend(self.config, self.cfg, self.mesh_rules, self.tokenizer.vocab_size)
        rollout_fn = rollout.policy_rollout_fn(in_process.build_engine(state.params, max_length), self.tokenizer,
                                               agent, self.scorer, self.runtime, seed=seed)
        data.filter_hard_problems(problems, rollout_fn, stage.hard_filter_samples, out,
                                  chunk_size=self.config.rl.hard_filter_chunk)
    kept, _ = data.load_problems([f"problems:{out}"], f"{stage.field} (hard filter output {out})",
                                 integer_answers=False, deduplicate=False)
    if not kept:
      raise RuntimeError(f"stage {stage.name}: the hard filter kept no problem (every one was solved "
                         f"{stage.hard_filter_samples}/{stage.hard_filter_samples}); see {out}")
    return kept

  def _max_prompt_tokens(self, problems) -> int:
    return max(len(self.tokenizer.encode(chat.prompt_text(p.problem, self.chat_format))) for p in problems)

  # ------------------------------------------------------------------ loop
  def run(self, state: optim.TrainState, meta: dict | None) -> optim.TrainState:
    """Runs (or resumes from a checkpoint's `meta`) every stage to its end; returns the state."""
    rl_step = int(meta["rl_step"]) if meta else 0
    for stage in self.curriculum.stages:
      if rl_step > stage.end_step:  # ended, and its end ran before the next stage started
        continue
      if rl_step < stage.end_step:
        state = self._run_stage(stage, state, rl_step, meta if meta and meta["stage"] == stage.name else None)
        rl_step = stage.end_step
        self.harness.checkpointer.wait()
      self.on_stage_end(stage, state)  # idempotent: a resumed run redoes only what had not finished
      meta = None
    return state

  def _run_stage(self, stage: data.Stage, state: optim.TrainState, rl_step: int,
                 meta: dict | None) -> optim.TrainState:
    problems = self._stage_problems(stage, state)
    stats = data.DataStats(rows_read=len(problems), kept=len(problems))
    stream = data.prompt_iterator(self.config.data, self.tokenizer, problems, stats,  # whole batch everywhere
                                  seed=self.config.data.seed + stage.index, prompt_format=self.chat_format,
                                  process_index=0, process_count=1)
    if meta is not None and meta.get("data_state") is not None:
      stream.set_state(meta["data_state"])
    max_length = self._max_prompt_tokens(problems) + stage.max_response_tokens
    agent = agent_config(self.config, self.chat_format, stage.max_response_tokens, stage.max_turns)
    updater = self._updater_for(state)
    logging.info("stage %s (%d/%d): RL steps %d-%d, %d problems, %d-token budget, %d turns", stage.name,
                 stage.index + 1, len(self.curriculum.stages), stage.first_step + 1, stage.end_step,
                 len(problems), stage.max_response_tokens, stage.max_turns)
    self.harness.start_phase(self.step_offset + rl_step + 1)
    with self.backend.stage(state.params, max_length, version=rl_step):
      if self.config.rl.max_staleness:
        return self.runtime.run(self._run_stage_pipelined(rl_step, stage, stream, agent, updater, state))
      for k in range(rl_step, stage.end_step):
        state = self._run_step(k, stage, stream, agent, updater, state)
    return state

  def _run_step(self, k: int, stage: data.Stage, stream, agent: rollout.AgentConfig, updater: rl_update.RLUpdater,
                state: optim.TrainState) -> optim.TrainState:
    """One synchronous RL step: rollouts of the current policy, update, sync, metrics row, checkpoint."""
    state = self._maybe_reset(k, stage, state)
    start = time.monotonic()
    batch = next(stream)
    out = distributed.on_process_zero(lambda: self.runtime.run(self._rollouts(k, batch, agent)),
                                      f"the rollouts of RL step {k + 1}")
    rollout_s = time.monotonic() - start
    state, update_metrics, update_s = self._update(k, out, updater, state)
    sync_s = self.backend.sync(state.params, version=k + 1)
    row = self._row(k, stage, stream.epoch, out, update_metrics, start, rollout_s=rollout_s, rollout_wait_s=rollout_s,
                    update_s=update_s, weight_sync_s=sync_s)
    self._finish(k, stage, state, row, stream.get_state())
    return state

  async def _run_stage_pipelined(self, first: int, stage: data.Stage, stream, agent: rollout.AgentConfig,
                                 updater: rl_update.RLUpdater, state: optim.TrainState) -> optim.TrainState:
    """The stage's steps with rollouts up to `rl.max_staleness` steps ahead (module docstring)."""
    bound = self.config.rl.max_staleness
    pending = {}

    def launch(j: int) -> None:
      batch = next(stream)
      pending[j] = (asyncio.ensure_future(self._rollouts(j, batch, agent)), stream.get_state(), stream.epoch,
                    time.monotonic())

    try:
      for j in range(first, min(first + bound + 1, stage.end_step)):
        launch(j)
      for k in range(first, stage.end_step):
        state = self._maybe_reset(k, stage, state)
        task, data_state, epoch, launched = pending.pop(k)
        waited = time.monotonic()
        out = await task
        ready = time.monotonic()
        out, staleness = drop_stale_groups(out, k, bound)
        state, update_metrics, update_s = await asyncio.to_thread(self._update, k, out, updater, state)
        sync_s = await self.backend.sync_async(state.params, version=k + 1, abort_all_requests=True)
        if k + 1 + bound < stage.end_step:
          launch(k + 1 + bound)
        row = self._row(k, stage, epoch, out, update_metrics, waited, rollout_s=ready - launched,
                        rollout_wait_s=ready - waited, update_s=update_s, weight_sync_s=sync_s, **staleness)
        await asyncio.to_thread(self._finish, k, stage, state, row, data_state)
    finally:  # a failed step: the rollouts started ahead are not needed
      for task, *_ in pending.values():
        task.cancel()
      await asyncio.gather(*(task for task, *_ in pending.values()), return_exceptions=True)
    return state

  def _maybe_reset(self, k: int, stage: data.Stage, state: optim.TrainState) -> optim.TrainState:
    if k == stage.first_step and stage.reset_optimizer and k > 0:
      logging.info("stage %s: optimizer state reset before RL step %d (warm-up restarts)", stage.name, k + 1)
      return self._reset_optimizer(state)
    return state

  def _rollouts(self, k: int, batch, agent: rollout.AgentConfig):
    """The coroutine of step k's rollouts of `batch` (scored as each ends)."""
    rl = self.config.rl
    problems = [data.Problem(pid, text, answer, source) for pid, text, answer, source in
                zip(batch.ids, batch.problems, batch.answers, batch.sources)]
    keys = [f"{k}/{i}/{pid}" for i, pid in enumerate(batch.ids)]
    bar = progress.Progress(f"rl step {k + 1}: rollouts", len(problems) * rl.num_rollouts)
    return rollout.rollout_problems(self.backend.engine(), self.runtime.tools, self.tokenizer, problems,
                                    rl.num_rollouts, agent, self.config.seed, keys=keys, scorer=self.scorer,
                                    on_done=bar.update)

  def _update(self, k: int, out: rollout.ProblemRollouts, updater: rl_update.RLUpdater,
              state: optim.TrainState) -> tuple[optim.TrainState, dict, float]:
    """(state, update metrics, seconds): the RL update on step k's rollouts."""
    check_sandbox_errors([s for g in out.groups for r in g for s in r.record.tool_statuses],
                         self.config.rl.max_sandbox_error_fraction, k + 1, self.harness.last_saved())
    groups = rl_update.RolloutGroups(
        [[r.trajectory for r in g] for g in out.groups], out.rewards,
        [[r.record for r in g] for g in out.groups], [[r.sampler_logprobs for r in g] for g in out.groups])
    began = time.monotonic()
    state, update_metrics = updater.update(state, groups, seed=(self.config.seed, k))
    jax.block_until_ready(state.params)
    return state, update_metrics, time.monotonic() - began

  def _row(self, k: int, stage: data.Stage, epoch: float, out: rollout.ProblemRollouts, update_metrics: dict,
           start: float, **seconds_and_counts) -> dict:
    """Step k's metrics row (module docstring); `seconds_and_counts`: rollout_s, rollout_wait_s,
    update_s, weight_sync_s (time/...) and, pipelined, the staleness counts (rollout/...)."""
    flat = [r for g in out.groups for r in g]
    response_tokens = sum(r.trajectory.num_model_tokens for r in flat)
    row = {"stage": stage.name, "rl/step": float(k + 1), "rl/stage_index": float(stage.index),
           **update_metrics, **evaluate.rollout_stats(out.groups, out.rewards, "rollout/"),
           "sandbox/error_calls": float(sum(s == "sandbox_error" for r in flat for s in r.record.tool_statuses)),
           "data/epoch": epoch, "time/score_s": out.timing.score_s,
           "time/score_hidden_fraction": out.timing.score_hidden_fraction,
           "rollout/off_version_samples": float(sum(bool(r.weight_versions) and r.weight_versions != (str(k),)
                                                    for r in flat)),
           "throughput/response_tokens_per_s": response_tokens / max(out.timing.generate_s, 1e-9)}
    for name, value in seconds_and_counts.items():
      row[f"time/{name}" if name.endswith("_s") else f"rollout/{name}"] = float(value)
    row["time/step_s"] = time.monotonic() - start
    return row

  def _finish(self, k: int, stage: data.Stage, state: optim.TrainState, row: dict, data_state) -> None:
    """Writes step k's row, checkpoints when due, logs the step."""
    global_step = self.step_offset + k + 1
    done = k + 1 == stage.end_step
    meta = {"phase": "rl", "rl_step": k + 1, "stage": stage.name, "data_state": data_state,  # after batch k
            "config": json.loads(self.config.to_json_best_effort())}
    self.harness.finish_step(global_step, state, row, meta,
                             save=done or (k + 1) % self.config.checkpoint.rl_every_steps == 0)
    logging.info(
        "rl step %d/%d (%s) reward %.3f kept %d tool calls %.2f errors %.3f (positive %.3f) length %.0f "
        "loss %.4f (rollout %.1fs, update %.1fs, ETA %s)", k + 1, self.curriculum.total_steps, stage.name,
        row["reward/mean"], int(row["down_sampling/after_sampling_trace_num"]), row["rollout/tool_calls_mean"],
        row["rollout/tool_error_ratio"], row["rollout/positive_tool_error_ratio"],
        row["rollout/response_tokens_mean"], row.get("loss/policy", 0.0), row["time/rollout_s"],
        row["time/update_s"], self.harness.eta(global_step, self.step_offset + self.curriculum.total_steps))


def rollout_staleness(rollout_: rollout.AgentRollout, step: int) -> int:
  """step - the oldest weight version that produced the rollout's tokens (0 without versions)."""
  versions = [int(v) for v in rollout_.weight_versions if v.isdigit()]
  return step - min(versions) if versions else 0


def drop_stale_groups(out: rollout.ProblemRollouts, step: int, bound: int) -> tuple[rollout.ProblemRollouts, dict]:
  """(out without the groups holding a rollout more than `bound` versions older than `step`,
  {staleness_mean, stale_groups_dropped})."""
  staleness = [[rollout_staleness(r, step) for r in group] for group in out.groups]
  keep = [i for i, group in enumerate(staleness) if max(group) <= bound]
  counts = {"staleness_mean": float(np.mean([s for group in staleness for s in group])),
            "stale_groups_dropped": float(len(out.groups) - len(keep))}
  if len(keep) == len(out.groups):
    return out, counts
  return dataclasses.replace(out, groups=[out.groups[i] for i in keep], rewards=out.rewards[keep]), counts
