"""Supervised fine-tuning on tool-use trajectories, with the RL trainer's masking and machinery.

Loss: token-mean NLL over the tokens the model wrote (loss mask 1; the prompt and every environment
segment are 0), L = -sum m log p / sum m over the step's batch. One step packs `sft.batch_size`
trajectories into fixed-shape microbatches and runs the shared jitted update (train/step.py).
Every `checkpoint.every_steps` the state, the data stream's position and the config are saved;
restarting the same command resumes from the newest readable checkpoint and reproduces the
metrics of an uninterrupted run (bitwise on CPU).

Reads config.sft.{steps, batch_size, row_length, rows_per_microbatch, num_microbatches,
logits_chunk, eval_every_steps, num_eval}, config.data.{sft_files, seed}, config.checkpoint.*,
config.optim.*, config.seed.
"""
import dataclasses
import json
import os
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax.train import checkpoint as checkpoint_lib
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
      logp = step.token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions, mb.segment_ids,
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


def _format_eta(seconds: float) -> str:
  minutes, secs = divmod(int(seconds), 60)
  return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s"


def train_sft(config: ml_collections.ConfigDict, workdir: str, cfg: models.ModelConfig, params,
              examples: list[SftExample], mesh_rules: models.MeshRules) -> tuple[dict, optim.TrainState]:
  """Runs (or resumes) SFT to config.sft.steps; returns (summary dict, final train state)."""
  sft = config.sft
  train_examples, eval_examples = split_eval(examples, sft.num_eval)
  optimizer = optim.make_optimizer(config.optim)
  state = optim.init_train_state(params, optimizer, config.seed, mesh_rules)
  stream = data.ShardedStream(train_examples, sft.batch_size, config.data.seed, collate=list,
                              key=lambda e: e.id, name="trace")
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep,
                                     config.checkpoint.async_save)
  writer = metrics_lib.MetricsWriter(workdir)
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, meta = restored
    stream.set_state(meta["data_state"])
    logging.info("resumed from step %d", int(state.step))
  writer.truncate_after(int(state.step))  # rows of steps about to be (re)computed
  train_step = step.jit_train_step(
      step.make_train_step(cfg, step.sft_objective(), optimizer, mesh_rules, sft.logits_chunk), state, mesh_rules)
  evaluate = _eval_fn(cfg, mesh_rules, sft.logits_chunk)
  eval_batches = [_pack(eval_examples[i:i + sft.batch_size], sft)
                  for i in range(0, len(eval_examples), sft.batch_size)]
  start, t0 = int(state.step), time.time()
  last_row = metrics_lib.read_metrics(workdir)[-1] if start else {}
  for step_index in range(start, sft.steps):
    t_step = time.time()
    batch = _pack(next(stream), sft)
    state, device_metrics = train_step(state, batch)
    row = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    done = step_index + 1
    bad = [k for k, v in row.items() if not np.isfinite(v)]
    if bad:
      raise FloatingPointError(f"non-finite {', '.join(bad)} at step {done} (steps {start + 1}-{done} "
                               f"of this run); the last checkpoint is step {ckpt.steps()[-1] if ckpt.steps() else 0}")
    row.update({"data/epoch": stream.epoch, "data/tokens": float(batch.num_trajectory_tokens),
                "time/step_s": time.time() - t_step})
    if eval_batches and (done % sft.eval_every_steps == 0 or done == sft.steps):
      sums = [evaluate(state.params, b) for b in eval_batches]
      row["eval/loss_sft"] = float(sum(n for n, _ in sums) / max(sum(c for _, c in sums), 1.0))
    last_row = writer.write(done, row)
    eta = (time.time() - t0) / (done - start) * (sft.steps - done)
    logging.info("step %d/%d loss %.4f%s grad_norm %.3f lr %.2e (%.2fs/step, ETA %s)", done, sft.steps,
                 row["loss/sft"], f" eval {row['eval/loss_sft']:.4f}" if "eval/loss_sft" in row else "",
                 row["grad/norm"], row["optim/lr"], row["time/step_s"], _format_eta(eta))
    if done % config.checkpoint.every_steps == 0 or done == sft.steps:
      ckpt.save(done, state, {"data_state": stream.get_state(), "stage": "sft",
                              "config": json.loads(config.to_json_best_effort())})
  ckpt.close()
  writer.close()
  return {"job": "sft", "steps": sft.steps, "final_metrics": last_row, "num_train_traces": len(train_examples),
          "num_eval_traces": len(eval_examples)}, state
