"""Packing trajectories into fixed-shape microbatches (first-fit decreasing, shifted targets)."""
import numpy as np
import pytest

from rstar_jax.train import packing


def test_segments_hold_shifted_targets_masks_and_restarting_positions():
  ids = [np.array([5, 6, 7, 8]), np.array([1, 2, 3])]
  masks = [np.array([0, 0, 1, 1]), np.array([0, 1, 1])]
  batch = packing.pack_trajectories(ids, masks, [0.5, -1.0], row_length=8, rows_per_microbatch=1)
  assert batch.input_ids.shape == (1, 1, 8)  # 3 + 2 positions fit one row
  row = {k: v[0, 0].tolist() for k, v in batch._asdict().items()}
  assert row["input_ids"] == [5, 6, 7, 1, 2, 0, 0, 0]
  assert row["targets"] == [6, 7, 8, 2, 3, 0, 0, 0]
  assert row["loss_mask"] == [0, 1, 1, 1, 1, 0, 0, 0]
  assert row["advantages"] == [0.5, 0.5, 0.5, -1.0, -1.0, 0, 0, 0]
  assert row["positions"] == [0, 1, 2, 0, 1, 0, 0, 0]
  assert row["segment_ids"] == [1, 1, 1, 2, 2, 0, 0, 0]
  assert batch.num_trajectory_tokens == 5


def test_first_fit_decreasing_and_bucketed_microbatch_counts():
  lengths = [7, 5, 4, 3, 2, 2, 7, 7, 7, 7]  # tokens; segments are one shorter: 6, 4, 3, 2, 1, 1, 6 x 4
  ids = [np.arange(n) for n in lengths]
  batch = packing.pack_trajectories(ids, [np.ones(n) for n in lengths], None, row_length=6, rows_per_microbatch=1)
  # rows: [6] x 5, [4, 2], [3, 1, 1] -> 7 rows -> 8 microbatches of 1 row (the bucket above 7)
  assert batch.segment_ids.shape == (8, 1, 6)
  assert [int(np.count_nonzero(batch.segment_ids[m, 0])) for m in range(8)] == [6] * 5 + [6, 5, 0]
  assert batch.loss_mask.sum() == sum(n - 1 for n in lengths)
  assert [packing.microbatch_bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="trajectory 1 has 9 tokens; rows hold 2..8"):
    packing.pack_trajectories([np.arange(3), np.arange(9)], [np.ones(3), np.ones(9)], None, 7, 1)
  with pytest.raises(ValueError, match="trajectory 0: 3 tokens but 2 mask entries"):
    packing.pack_trajectories([np.arange(3)], [np.ones(2)], None, 7, 1)
  with pytest.raises(ValueError, match="more than num_microbatches=1 x rows_per_microbatch=1"):
    packing.pack_trajectories([np.arange(6)] * 2, [np.ones(6)] * 2, None, 5, 1, num_microbatches=1)


def test_mask_scales_and_old_logprobs_follow_their_trajectory():
  ids = [np.array([5, 6, 7]), np.array([1, 2, 3, 4])]
  masks = [np.array([0, 1, 1]), np.array([0, 0, 1, 1])]
  logprobs = [np.array([0.0, -0.5, -0.25]), np.array([0.0, -1.0, -2.0, -3.0])]
  batch = packing.pack_trajectories(ids, masks, None, row_length=5, rows_per_microbatch=2,
                                    mask_scales=[2.0, 0.5], old_logprobs=logprobs)
  # longest first: trajectory 1 (3 positions) then trajectory 0 (2 positions) share row 0
  np.testing.assert_array_equal(batch.loss_mask[0], [[0, 0.5, 0.5, 2.0, 2.0], [0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch.old_logp[0], [[-1.0, -2.0, -3.0, -0.5, -0.25], [0, 0, 0, 0, 0]])
  with pytest.raises(ValueError, match="trajectory 0: 3 tokens but 3 mask entries, 2 old_logprobs"):
    packing.pack_trajectories(ids[:1], masks[:1], None, 5, 1, old_logprobs=[np.zeros(2)])
