"""The jitted update: log-probs, masking, accumulation == big batch, 8 devices == 1, no recompiles."""
import jax
import ml_collections
import numpy as np
import optax
import pytest

from rstar_jax import models
from rstar_jax.train import optim, packing, step
import compile_counter
import tiny_models

CFG = tiny_models.tiny_config("qwen3", vocab_size=96)


def _optim_config(**overrides):
  defaults = dict(learning_rate=1e-2, warmup_steps=2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
                  max_grad_norm=1.0)
  return ml_collections.ConfigDict({**defaults, **overrides})


def _trajectories(n=6, seed=0):
  rng = np.random.default_rng(seed)
  ids, masks, advs = [], [], []
  for i in range(n):
    length = int(rng.integers(5, 14))
    ids.append(rng.integers(0, 96, length).astype(np.int32))
    mask = np.zeros(length, np.int32)
    mask[3:] = 1
    mask[6:8] = 0  # an environment segment inside the response
    masks.append(mask)
    advs.append(float(rng.normal()))
  return ids, masks, advs


def _state(params, optimizer):
  return optim.init_train_state(params, optimizer, seed=0)


def test_token_logprobs_match_log_softmax_of_logits_chunked_or_not():
  params = models.init_params(CFG, jax.random.key(0))
  ids = tiny_models.random_ids((2, 9), vocab=96)
  targets = tiny_models.random_ids((2, 8), seed=1, vocab=96)
  positions = np.broadcast_to(np.arange(8), (2, 8))
  segments = np.ones((2, 8), np.int32)
  logits = np.asarray(models.logits(CFG, params, ids[:, :8]), np.float64)
  expected = np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), targets[..., None], -1)[..., 0]
  for chunk in (0, 4):
    got = models.token_logprobs(CFG, params, ids[:, :8], targets, positions, segments, logits_chunk=chunk)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sft_loss_counts_only_policy_tokens():
  params = models.init_params(CFG, jax.random.key(1))
  ids, masks, _ = _trajectories(3)
  batch = packing.pack_trajectories(ids, masks, None, row_length=16, rows_per_microbatch=2)
  optimizer = optim.make_optimizer(_optim_config())
  _, metrics = step.make_train_step(CFG, step.sft_objective(), optimizer)(_state(params, optimizer), batch)
  expected_sum, count = 0.0, 0
  for x, m in zip(ids, masks):
    logits = np.asarray(models.logits(CFG, params, x[None, :-1]), np.float64)[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = logp[np.arange(len(x) - 1), x[1:]]
    expected_sum -= float((picked * m[1:]).sum())
    count += int(m[1:].sum())
  assert float(metrics["sft/num_tokens"]) == count
  np.testing.assert_allclose(float(metrics["loss/sft"]), expected_sum / count, rtol=1e-5)


def test_accumulated_microbatches_equal_one_big_batch():
  params = models.init_params(CFG, jax.random.key(2))
  ids, masks, advs = _trajectories(8, seed=3)
  # Plain SGD, so parameters compare the gradients linearly (Adam's first step is ~sign(g)).
  optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
  results = []
  for rows, micro in ((8, 1), (2, 4), (1, 8)):
    batch = packing.pack_trajectories(ids, masks, advs, row_length=13, rows_per_microbatch=rows,
                                      num_microbatches=micro)
    state = _state(params, optimizer)
    old = step.make_logprob_fn(CFG)(state.params, batch)
    batch = batch._replace(old_logp=np.asarray(old))
    state, metrics = jax.jit(step.make_train_step(CFG, step.grpo_objective(), optimizer))(state, batch)
    results.append((state.params, metrics))
  for params_k, metrics_k in results[1:]:
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(params_k)):
      np.testing.assert_allclose(a, b, atol=1e-6)
    for key in ("loss/policy", "grad/norm", "policy/num_tokens", "policy/ratio_mean"):
      np.testing.assert_allclose(metrics_k[key], results[0][1][key], rtol=1e-5, atol=1e-7, err_msg=key)
  # Recomputed old log-probs make the ratio exactly 1 before the update.
  assert float(results[0][1]["policy/ratio_max"]) == pytest.approx(1.0, abs=1e-6)


def test_eight_device_train_step_equals_one_device():
  mesh_rules = models.MeshRules(models.make_mesh(data=2, fsdp=2, tensor=2))
  ids, masks, advs = _trajectories(8, seed=4)
  batch = packing.pack_trajectories(ids, masks, advs, row_length=16, rows_per_microbatch=4)
  optimizer = optim.make_optimizer(_optim_config())
  outs = []
  for rules in (mesh_rules, None):
    params = models.init_params(CFG, jax.random.key(5), rules)
    state = optim.init_train_state(params, optimizer, seed=0, mesh_rules=rules)
    old = step.jit_logprobs(step.make_logprob_fn(CFG, rules), state, rules)(state.params, batch)
    b = batch._replace(old_logp=np.asarray(old))
    train_step = step.jit_train_step(step.make_train_step(CFG, step.grpo_objective(), optimizer, rules), state, rules)
    for _ in range(2):
      state, metrics = train_step(state, b)
    if rules is not None:
      mu = state.opt_state.inner[1].inner_state[0].mu["layers"]["mlp"]["up_proj_kernel"]
      assert mu.sharding == state.params["layers"]["mlp"]["up_proj_kernel"].sharding
    outs.append((jax.device_get(state.params), jax.device_get(metrics)))
  # Adam's early updates are ~lr * g / |g|, which magnifies fp noise in near-zero gradients:
  # 1e-5 is 0.1% of one update of size lr = 1e-2.
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_allclose(outs[0][1]["loss/policy"], outs[1][1]["loss/policy"], rtol=1e-5, atol=1e-7)


def test_steps_of_equal_shape_compile_once():
  optimizer = optim.make_optimizer(_optim_config())
  state = _state(models.init_params(CFG, jax.random.key(6)), optimizer)
  train_step = step.jit_train_step(step.make_train_step(CFG, step.sft_objective(), optimizer), state, None)
  batches = [packing.pack_trajectories(*_trajectories(4, seed=s)[:2], None, row_length=16, rows_per_microbatch=2,
                                       num_microbatches=2) for s in range(4)]
  state, _ = train_step(state, batches[0])
  with compile_counter.count_compiles() as compiles:
    for batch in batches[1:]:
      state, metrics = train_step(state, batch)
  assert not compiles
  assert int(state.step) == 4
  assert np.isfinite(float(metrics["loss/sft"]))


def test_warmup_then_constant_and_reset_restarts_warmup():
  optimizer = optim.make_optimizer(_optim_config(learning_rate=0.1, warmup_steps=4, reset_at_steps=(6,)))
  state = _state(models.init_params(CFG, jax.random.key(7)), optimizer)
  train_step = jax.jit(step.make_train_step(CFG, step.sft_objective(), optimizer))
  batch = packing.pack_trajectories(*_trajectories(2)[:2], None, row_length=16, rows_per_microbatch=2)
  lrs = []
  for _ in range(8):
    state, metrics = train_step(state, batch)
    lrs.append(float(metrics["optim/lr"]))
    if len(lrs) == 6:
      before_reset = jax.device_get(state)
  np.testing.assert_allclose(lrs, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.025, 0.05], rtol=1e-6)
  assert int(state.step) == 8
  # The 7th update (reset first) equals the first update of a fresh optimizer at the same params.
  after, _ = train_step(before_reset, batch)
  expected, _ = train_step(_state(before_reset.params, optimizer), batch)
  for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(expected.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_reset_steps_are_named():
  with pytest.raises(ValueError, match=r"reset steps must be integers >= 1.*\[0\]"):
    optim.make_optimizer(_optim_config(reset_at_steps=(0,)))


@pytest.mark.parametrize("remat", ["full", "dots", "projections"])
def test_rematerialization_gives_the_same_update(remat):
  ids, masks, advs = _trajectories(4, seed=8)
  batch = packing.pack_trajectories(ids, masks, None, row_length=16, rows_per_microbatch=2)
  optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
  params = models.init_params(CFG, jax.random.key(9))
  outs = []
  for cfg in (CFG, CFG.replace(remat=remat)):
    state, metrics = jax.jit(step.make_train_step(cfg, step.sft_objective(), optimizer, logits_chunk=8))(
        _state(params, optimizer), batch)
    outs.append(state.params)
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bf16_compute_step_is_close_to_fp32():
  ids, masks, _ = _trajectories(4, seed=10)
  batch = packing.pack_trajectories(ids, masks, None, row_length=16, rows_per_microbatch=2)
  optimizer = optim.make_optimizer(_optim_config())
  params = models.init_params(CFG, jax.random.key(11))
  losses = []
  for cfg in (CFG, CFG.replace(dtype="bfloat16")):
    _, metrics = jax.jit(step.make_train_step(cfg, step.sft_objective(), optimizer))(_state(params, optimizer), batch)
    losses.append(float(metrics["loss/sft"]))
  assert losses[0] != losses[1]
  np.testing.assert_allclose(losses[1], losses[0], rtol=2e-2)


def _saved_shapes(cfg, capsys) -> set[str]:
  """The shapes of what the backward pass of a [1, 8] forward keeps, per jax.ad_checkpoint."""
  params = models.init_params(cfg, jax.random.key(0))
  capsys.readouterr()
  jax.ad_checkpoint.print_saved_residuals(lambda p: models.logits(cfg, p, np.zeros((1, 8), np.int32)).sum(), params)
  return {line.split()[0] for line in capsys.readouterr().out.splitlines() if "output of" in line}


def test_the_projections_policy_keeps_the_tagged_intermediates(capsys):
  L, H, K, D, F = CFG.num_layers, CFG.num_heads, CFG.num_kv_heads, CFG.head_dim, CFG.intermediate_size
  tagged = {f"f32[{L},1,8,{K},{D}]", f"f32[{L},1,8,{H},{D}]", f"f32[{L},1,8,{F}]"}  # k/v, q/attention out, mlp
  assert tagged <= _saved_shapes(CFG.replace(remat="projections"), capsys)
  assert not tagged & _saved_shapes(CFG.replace(remat="full"), capsys)
