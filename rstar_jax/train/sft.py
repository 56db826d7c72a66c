"""Supervised fine-tuning on tool-use trajectories, with the RL trainer's masking and machinery.

Loss: token-mean NLL over the tokens the model wrote (loss mask 1; the prompt and every environment
segment are 0), L = -sum m log p / sum m over the step's batch. One step packs `sft.batch_size`
trajectories into fixed-shape microbatches and runs the shared jitted update (train/step.py).
Every `checkpoint.every_steps` the state, the data stream's position and the config are saved
(through the shared `harness.StepHarness`); restarting the same command resumes from the newest
readable checkpoint and reproduces the metrics of an uninterrupted run (bitwise on CPU).

Reads config.sft.{steps, batch_size, row_length, rows_per_microbatch, num_microbatches,
logits_chunk, eval_every_steps, num_eval, optim.*}, config.data.{sft_files, seed},
config.checkpoint.every_steps, config.seed.
"""
import dataclasses
import json
import time
from typing import Sequence

import jax
import ml_collections
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax.train import harness as harness_lib
from rstar_jax.train import metrics as metrics_lib
from rstar_jax.train import optim, packing, step


@dataclasses.dataclass(frozen=True)
class SftExample:
  """One encoded trace: its id, token ids and loss mask."""
  id: str
  trajectory: chat.Trajectory


def encode_traces(traces: Sequence[data.SftTrace], tokenizer: chat.Tokenizer, max_tokens: int,
                  stats: data.DataStats) -> list[SftExample]:
  """Encodes each trace's segments; traces longer than `max_tokens` are skipped and counted."""
  examples = []
  for trace in traces:
    trajectory = chat.encode_segments(tokenizer, trace.segments)
    if len(trajectory.token_ids) > max_tokens:
      stats.skip("trajectory_too_long")
      stats.kept -= 1
      continue
    examples.append(SftExample(trace.id, trajectory))
  return examples


def _pack(examples: Sequence[SftExample], sft: ml_collections.ConfigDict) -> packing.PackedBatch:
  return packing.pack_trajectories([e.trajectory.token_ids for e in examples],
                                   [e.trajectory.loss_mask for e in examples], None,
                                   row_length=sft.row_length, rows_per_microbatch=sft.rows_per_microbatch,
                                   num_microbatches=sft.num_microbatches)


def _eval_fn(cfg: models.ModelConfig, mesh_rules, logits_chunk: int):
  """Held-out NLL sum and token count over the policy's tokens of a packed batch."""
  def evaluate(params, batch: packing.PackedBatch):
    def one(mb):
      logp = models.token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions, mb.segment_ids,
                                 mesh_rules, logits_chunk)
      return -(logp * mb.loss_mask).sum(), mb.loss_mask.sum()
    nll, count = jax.lax.map(one, batch)
    return nll.sum(), count.sum()
  return jax.jit(evaluate)


def split_eval(examples: list[SftExample], num_eval: int) -> tuple[list[SftExample], list[SftExample]]:
  """The last `num_eval` examples (in file order) are held out; the rest train."""
  if not 0 <= num_eval < len(examples):
    raise ValueError(f"config.sft.num_eval={num_eval} must be in [0, {len(examples)}) "
                     f"(the number of usable traces)")
  return examples[:len(examples) - num_eval], examples[len(examples) - num_eval:]


def train_sft(config: ml_collections.ConfigDict, cfg: models.ModelConfig, state: optim.TrainState,
              meta: dict | None, examples: list[SftExample], mesh_rules: models.MeshRules,
              harness: harness_lib.StepHarness) -> tuple[dict, optim.TrainState]:
  """Runs (or resumes, from `state` and its checkpoint `meta`) SFT to global step config.sft.steps.

  `state` holds the SFT optimizer (`optim.make_optimizer(config.sft.optim)`); returns
  (summary dict, final train state).
  """
  sft = config.sft
  train_examples, eval_examples = split_eval(examples, sft.num_eval)
  optimizer = optim.make_optimizer(sft.optim)
  # Every process reads the whole batch (train/distributed.py).
  stream = data.ShardedStream(train_examples, sft.batch_size, config.data.seed, collate=list,
                              key=lambda e: e.id, name="trace", process_index=0, process_count=1)
  if meta is not None:
    stream.set_state(meta["data_state"])
  train_step = step.jit_train_step(
      step.make_train_step(cfg, step.sft_objective(), optimizer, mesh_rules, sft.logits_chunk), state, mesh_rules)
  evaluate = _eval_fn(cfg, mesh_rules, sft.logits_chunk)
  eval_batches = [_pack(eval_examples[i:i + sft.batch_size], sft)
                  for i in range(0, len(eval_examples), sft.batch_size)]
  start = int(state.step)
  last_row = metrics_lib.read_metrics(harness.workdir)[-1] if start else {}
  harness.start_phase(start + 1)
  for done in range(start + 1, sft.steps + 1):
    t_step = time.time()
    batch = _pack(next(stream), sft)
    state, device_metrics = train_step(state, batch)
    row = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    row.update({"stage": "sft", "data/epoch": stream.epoch, "data/tokens": float(batch.num_trajectory_tokens),
                "time/step_s": time.time() - t_step})
    if eval_batches and (done % sft.eval_every_steps == 0 or done == sft.steps):
      sums = [evaluate(state.params, b) for b in eval_batches]
      row["eval/loss_sft"] = float(sum(n for n, _ in sums) / max(sum(c for _, c in sums), 1.0))
    save = done % config.checkpoint.every_steps == 0 or done == sft.steps
    last_row = harness.finish_step(done, state, row, {
        "phase": "sft", "data_state": stream.get_state(), "config": json.loads(config.to_json_best_effort())},
        save=save)
    logging.info("sft step %d/%d loss %.4f%s grad_norm %.3f lr %.2e (%.2fs/step, ETA %s)", done, sft.steps,
                 row["loss/sft"], f" eval {row['eval/loss_sft']:.4f}" if "eval/loss_sft" in row else "",
                 row["grad/norm"], row["optim/lr"], row["time/step_s"], harness.eta(done, sft.steps))
  harness.checkpointer.wait()
  return {"job": "sft", "steps": sft.steps, "final_metrics": last_row, "num_train_traces": len(train_examples),
          "num_eval_traces": len(eval_examples)}, state
