"""Packs variable-length trajectories into fixed-shape microbatches for the jitted update.

A trajectory of n tokens x_0..x_{n-1} with loss mask m (1 where the policy wrote x_i) becomes a
segment of n-1 positions: inputs x_0..x_{n-2}, targets x_1..x_{n-1}, target mask m_1..m_{n-1},
positions 0..n-2. Segments are placed into rows of `row_length` positions by first-fit decreasing
(each row holds whole trajectories; they never attend across segments), rows are grouped into
`num_microbatches` microbatches of `rows_per_microbatch` rows. Unused positions are padding:
segment id 0, loss mask 0. Arrays are [M, b, T]; the trainer scans over M.

The microbatch count M is the smallest that fits, rounded up to the next of 1, 2, 3, 4, 6, 8, 12,
16, 24, ... (two sizes per doubling: a run compiles the update for a handful of shapes at most, and
at most a third of the rows are padding), or fixed by the caller.
"""
import math
from typing import NamedTuple, Sequence

import numpy as np


class PackedBatch(NamedTuple):
  """Fixed-shape update batch; every array [M, b, T].

  input_ids, targets: int32 tokens fed and predicted; loss_mask: float32, 1 (or the trajectory's
  mask scale) where the target was written by the policy, else 0; advantages: float32 per target token (the trajectory's advantage);
  positions: int32 RoPE positions restarting per segment; segment_ids: int32, 0 for padding;
  old_logp: float32 log pi_old of each target (given by the caller, else 0 until the trainer
  recomputes it); sampler_logp: float32 the sampler's log-prob of each target the policy wrote
  (0 elsewhere, and everywhere when the caller gave none).
  """
  input_ids: np.ndarray
  targets: np.ndarray
  loss_mask: np.ndarray
  advantages: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray
  old_logp: np.ndarray
  sampler_logp: np.ndarray

  @property
  def num_trajectory_tokens(self) -> int:
    return int(np.count_nonzero(self.segment_ids))


def microbatch_bucket(needed: int) -> int:
  """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (2^k and 3 * 2^k) that is >= needed."""
  power = 1 << max(needed - 1, 0).bit_length()
  return power * 3 // 4 if power >= 4 and power * 3 // 4 >= needed else power


def _rows_first_fit(lengths: Sequence[int], row_length: int) -> list[list[int]]:
  """Indices per row, longest first into the first row with room (first-fit decreasing)."""
  rows, room = [], []
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    for r, free in enumerate(room):
      if lengths[i] <= free:
        rows[r].append(i)
        room[r] -= lengths[i]
        break
    else:
      rows.append([i])
      room.append(row_length - lengths[i])
  return rows


def pack_trajectories(token_ids: Sequence[np.ndarray], loss_masks: Sequence[np.ndarray],
                      advantages: Sequence[float] | None, row_length: int, rows_per_microbatch: int,
                      num_microbatches: int | None = None, mask_scales: Sequence[float] | None = None,
                      old_logprobs: Sequence[np.ndarray] | None = None,
                      sampler_logprobs: Sequence[np.ndarray] | None = None) -> PackedBatch:
  """Packs trajectories (token ids and loss masks, 1-D each) into a PackedBatch.

  Args:
    token_ids: per trajectory, int token ids [n] (prompt and response, as generated).
    loss_masks: per trajectory, [n] 0/1, 1 where the policy wrote the token.
    advantages: per trajectory advantage, or None (SFT: all 1).
    row_length: T, positions per row; a trajectory needs n - 1 <= T.
    rows_per_microbatch: b.
    num_microbatches: M, or None for the smallest of 1, 2, 3, 4, 6, 8, 12, ... that fits.
    mask_scales: per trajectory factor on its loss mask (token weights of a loss aggregation),
      or None for 1.
    old_logprobs: per trajectory, [n] float log pi_old of each token given the tokens before it
      (e.g. the sampler's; entry 0 unused), written to `old_logp`; or None (zeros).
    sampler_logprobs: per trajectory, [n] the sampler's log-probs aligned with the token ids
      (entry 0 unused), written to `sampler_logp` where the loss mask is 1; or None (zeros).

  Raises:
    ValueError: naming the trajectory that is too long or mismatched, or when M is too small.
  """
  for name, values in (("loss_masks", loss_masks), ("advantages", advantages), ("mask_scales", mask_scales),
                       ("old_logprobs", old_logprobs), ("sampler_logprobs", sampler_logprobs)):
    if values is not None and len(values) != len(token_ids):
      raise ValueError(f"got {len(token_ids)} token arrays but {len(values)} {name}")
  lengths = []
  for i, (ids, mask) in enumerate(zip(token_ids, loss_masks)):
    lengths_given = [("mask entries", len(mask))] + [
        (f"{name}", len(values[i])) for name, values in (("old_logprobs", old_logprobs),
                                                         ("sampler_logprobs", sampler_logprobs))
        if values is not None]
    if any(n != len(ids) for _, n in lengths_given):
      raise ValueError(f"trajectory {i}: {len(ids)} tokens but " +
                       ", ".join(f"{n} {name}" for name, n in lengths_given))
    if not 2 <= len(ids) <= row_length + 1:
      raise ValueError(f"trajectory {i} has {len(ids)} tokens; rows hold 2..{row_length + 1} "
                       f"(row_length={row_length})")
    lengths.append(len(ids) - 1)
  rows = _rows_first_fit(lengths, row_length)
  needed = max(1, math.ceil(len(rows) / rows_per_microbatch))
  if num_microbatches is None:
    num_microbatches = microbatch_bucket(needed)
  elif needed > num_microbatches:
    raise ValueError(f"{len(token_ids)} trajectories need {len(rows)} rows of {row_length}, more than "
                     f"num_microbatches={num_microbatches} x rows_per_microbatch={rows_per_microbatch}")
  shape = (num_microbatches * rows_per_microbatch, row_length)
  out = {name: np.zeros(shape, dtype) for name, dtype in (
      ("input_ids", np.int32), ("targets", np.int32), ("loss_mask", np.float32), ("advantages", np.float32),
      ("positions", np.int32), ("segment_ids", np.int32), ("old_logp", np.float32),
      ("sampler_logp", np.float32))}
  for r, members in enumerate(rows):
    offset = 0
    for segment, i in enumerate(members, start=1):
      n = lengths[i]
      span = slice(offset, offset + n)
      ids = np.asarray(token_ids[i])
      out["input_ids"][r, span] = ids[:-1]
      out["targets"][r, span] = ids[1:]
      out["loss_mask"][r, span] = np.asarray(loss_masks[i])[1:] * (1.0 if mask_scales is None else mask_scales[i])
      out["advantages"][r, span] = 1.0 if advantages is None else advantages[i]
      if old_logprobs is not None:
        out["old_logp"][r, span] = np.asarray(old_logprobs[i])[1:]
      if sampler_logprobs is not None:
        out["sampler_logp"][r, span] = np.where(np.asarray(loss_masks[i])[1:] > 0,
                                                np.asarray(sampler_logprobs[i])[1:], 0.0)
      out["positions"][r, span] = np.arange(n)
      out["segment_ids"][r, span] = segment
      offset += n
  return PackedBatch(**{k: v.reshape(num_microbatches, rows_per_microbatch, row_length) for k, v in out.items()})
