"""Olsson et al.'s in-context-learning score and repeated-random-tokens probe: synthetic models
whose scores are known, a real GPT against a loop, the settings they refuse, and a workdir's
checkpoints."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import write_corpus

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.data import windows
from gptjax.downstream import icl
from gptjax.errors import UserError
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.training import checkpoint
from gptjax.training import workdir as workdir_lib
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import init_state

V = 64


def _repeated_twice(n: int, half: int, seed: int = 0) -> np.ndarray:
  """n windows, each a random sequence of `half` tokens then the same sequence again."""
  first = np.random.default_rng(seed).integers(0, V, (n, half))
  return np.concatenate([first, first], axis=1)


def test_a_perfect_copier_scores_minus_ln_v_on_repeated_sequences():
  half = 40
  windows_NxL1 = _repeated_twice(50, half)

  def copier(inputs_BxL):
    # Uniform in the first half; in the second, the token `half` back, very confidently: a pure
    # function of the tokens so far (position t predicts token t + 1 from tokens 0..t).
    logits_BxLxV = np.zeros((*inputs_BxL.shape, V))
    for t in range(half - 1, inputs_BxL.shape[1]):
      logits_BxLxV[np.arange(len(inputs_BxL)), t, inputs_BxL[:, t + 1 - half]] = 50.0
    return logits_BxLxV

  losses = icl.token_losses(icl.logits_loss_fn(copier), windows_NxL1, batch_size=16)
  np.testing.assert_allclose(losses[:, : half - 1], math.log(V))
  np.testing.assert_allclose(losses[:, half - 1 :], 0.0, atol=1e-18)
  result = icl.icl_score(losses, late=60, early=10, band=3)
  assert result['icl_score'] == pytest.approx(-math.log(V))
  assert result['early_loss'] == pytest.approx(math.log(V)) and result['late_loss'] < 1e-18
  assert len(result['loss_curve']) == 2 * half - 1 and result['windows'] == 50


def test_a_unigram_model_scores_zero_and_the_score_is_the_naive_difference():
  log_p = np.log(np.random.default_rng(1).dirichlet(np.ones(V)))
  tokens_NxL1 = np.random.default_rng(2).choice(V, (200, 41), p=np.exp(log_p))
  unigram = lambda inputs_BxL: np.broadcast_to(log_p, (*inputs_BxL.shape, V))
  losses = icl.token_losses(icl.logits_loss_fn(unigram), tokens_NxL1, batch_size=64)
  result = icl.icl_score(losses, late=30, early=5, band=2)
  # The naive computation: each position's mean loss over windows, then the bands' means.
  curve = [np.mean([-log_p[w[t + 1]] for w in tokens_NxL1]) for t in range(40)]
  np.testing.assert_allclose(result['loss_curve'], curve, rtol=1e-12)
  naive = np.mean(curve[28:33]) - np.mean(curve[3:8])
  assert result['icl_score'] == pytest.approx(naive, rel=1e-9, abs=1e-12)
  assert abs(result['icl_score']) < 4 * result['icl_stderr']  # 0 in expectation


@pytest.mark.parametrize(
  'late, early, band, message',
  [
    (500, 50, 5, r'late position 500 ± 5 is past the last of the windows\' 40 positions'),
    (39, 10, 1, r'at most 38 .* windows of 42 tokens or more \(a context n_ctx >= 41\)'),
    (30, 2, 3, 'early position 2 ± 3 starts before position 0'),
    (20, 18, 1, 'must come before the late position 20 ± 1'),
    (30, 10, -1, 'band is -1'),
  ],
)
def test_positions_that_do_not_fit_are_refused(late, early, band, message):
  with pytest.raises(UserError, match=message):
    icl.icl_score(np.zeros((3, 40)), late, early, band)
  icl.check_positions(40, 30, 10, 1)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: GPT, params, ids_1xL: jax.Array) -> jax.Array:
  return model.apply({'params': params}, ids_1xL)


def test_a_gpt_s_per_position_losses_equal_a_loop_over_prefixes():
  n_ctx = 24
  model = GPT(ModelConfig(vocab_size=V, n_ctx=n_ctx, n_layers=2, n_heads=2, d_model=16, d_ff=32))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, n_ctx), jnp.int32))['params']
  windows_NxL1 = np.random.default_rng(3).integers(0, V, (5, n_ctx + 1)).astype(np.int32)
  result = icl.evaluate_params(model.config, params, windows_NxL1, 20, 3, 1, batch_size=2)
  naive = np.zeros((5, n_ctx))
  for w, window in enumerate(windows_NxL1):
    # Row t holds the prefix of t + 1 tokens alone, padded after it (causal attention keeps the
    # padding out of position t); position t's loss is read from it, log-softmax in float64.
    prefixes_LxL = np.tril(np.broadcast_to(window[:-1], (n_ctx, n_ctx)))
    logits_LxV = np.asarray(_apply(model, params, prefixes_LxL), np.float64)[
      np.arange(n_ctx), np.arange(n_ctx)
    ]
    top_L = logits_LxV.max(-1)
    log_z_L = np.log(np.exp(logits_LxV - top_L[:, None]).sum(-1)) + top_L
    naive[w] = log_z_L - logits_LxV[np.arange(n_ctx), window[1:]]
  losses = icl.token_losses(icl.gpt_loss_fn(model.config, params), windows_NxL1, batch_size=2)
  np.testing.assert_allclose(losses, naive, rtol=1e-5)
  np.testing.assert_allclose(result['loss_curve'], naive.mean(0), rtol=1e-5)
  expected = icl.icl_score(naive, 20, 3, 1)
  assert result['icl_score'] == pytest.approx(expected['icl_score'], rel=1e-4, abs=1e-5)


def _tiny_workdir(tmp_path):
  """A tiny GPT workdir with a byte tokenizer and checkpoints at steps 10 and 20 (the second's
  params changed): (workdir, tokenizer, data)."""
  config = tiny.get_config()
  config.tokenizer.kind, config.sample.max_new_tokens = 'byte', 0
  config.data.source, config.data.text_files = 'text_files', write_corpus(tmp_path / 'corpus')
  config.data.val_fraction = 0.2
  workdir = str(tmp_path / 'run')
  workdir_lib.make(workdir)
  workdir_lib.save_config(config, workdir)
  tokenizer, data = windows.load_tokenizer_and_data(config, workdir, config.train.seq_len)
  model = GPT(configuration.model_config(config, tokenizer.vocab_size))
  state = jax.jit(lambda: init_state(model, make_optimizer(config.train), config.seed))()
  mngr = checkpoint.manager(workdir, 3)
  for step in (10, 20):  # two "checkpoints over training", the second's params changed
    state = state.replace(
      step=jnp.array(step, jnp.int32), params=jax.tree.map(lambda p: p * 1.1, state.params)
    )
    checkpoint.save(mngr, state)
  mngr.close()
  return workdir, tokenizer, data


def test_a_workdir_is_scored_at_each_checkpoint(tmp_path):
  workdir, tokenizer, data = _tiny_workdir(tmp_path)
  assert icl.checkpoint_steps(workdir) == [10, 20]
  rows = icl.evaluate_workdir(workdir, late=25, early=4, band=2, every_checkpoint=True)
  assert [r['step'] for r in rows] == [10, 20]
  assert [r['tokens'] for r in rows] == [s * 8 * 32 for s in (10, 20)]
  assert rows[0]['icl_score'] != rows[1]['icl_score']
  n_windows = (len(data.val) - 1) // 32
  assert rows[0]['windows'] == n_windows and len(rows[0]['loss_curve']) == 32
  # The latest checkpoint alone is the last row; the windows' mean loss is the curve's mean.
  (latest,) = icl.evaluate_workdir(workdir, late=25, early=4, band=2)
  assert latest['icl_score'] == pytest.approx(rows[1]['icl_score'], rel=1e-6)
  within = icl.validation_windows(workdir, limit=3, within_documents=True)
  assert within.shape == (3, 33) and not (within[:, 1:] == tokenizer.bos_id).any()
  with pytest.raises(UserError, match='late position 500 ± 5 is past the last'):
    icl.evaluate_workdir(workdir)


IDS = [3, 7, 11, 19, 23, 40, 41, 42, 50, 63]  # ten ids of the V


def test_repeated_random_windows_repeat_a_seeded_sequence_of_the_ids():
  windows_NxL1 = icl.repeated_random_windows(30, 25, IDS, seed=4)
  assert windows_NxL1.shape == (30, 50) and windows_NxL1.dtype == np.int32
  np.testing.assert_array_equal(windows_NxL1[:, :25], windows_NxL1[:, 25:])
  assert set(np.unique(windows_NxL1)) == set(IDS)
  np.testing.assert_array_equal(windows_NxL1, icl.repeated_random_windows(30, 25, IDS, seed=4))
  assert not np.array_equal(windows_NxL1, icl.repeated_random_windows(30, 25, IDS, seed=5))


def test_a_perfect_copier_s_copy_score_is_minus_ln_of_the_ids():
  half = 30
  windows_NxL1 = icl.repeated_random_windows(40, half, IDS, seed=1)
  log_uniform_V = np.full(V, -50.0)
  log_uniform_V[IDS] = 0.0  # uniform over the ids

  def copier(inputs_BxL):
    # Uniform over the ids in the first occurrence; in the second, the token `half` back.
    logits_BxLxV = np.broadcast_to(log_uniform_V, (*inputs_BxL.shape, V)).copy()
    for t in range(half, inputs_BxL.shape[1]):
      logits_BxLxV[np.arange(len(inputs_BxL)), t, inputs_BxL[:, t + 1 - half]] = 60.0
    return logits_BxLxV

  losses = icl.token_losses(icl.logits_loss_fn(copier), windows_NxL1, batch_size=16)
  result = icl.copy_score(losses, half)
  assert result['copy_score'] == pytest.approx(-math.log(len(IDS)), abs=1e-6)
  assert result['first_loss'] == pytest.approx(math.log(len(IDS)), abs=1e-6)
  assert result['repeat_loss'] < 1e-6 and result['copy_stderr'] < 1e-6
  assert (result['half'], result['skip'], result['copy_windows']) == (half, icl.COPY_SKIP, 40)


def test_a_unigram_model_s_copy_score_is_zero_within_its_standard_error():
  log_p = np.log(np.random.default_rng(6).dirichlet(np.ones(V)))
  unigram = lambda inputs_BxL: np.broadcast_to(log_p, (*inputs_BxL.shape, V))
  windows_NxL1 = icl.repeated_random_windows(300, 20, IDS, seed=2)
  losses = icl.token_losses(icl.logits_loss_fn(unigram), windows_NxL1, batch_size=64)
  result = icl.copy_score(losses, 20, skip=3)
  assert result['copy_stderr'] > 0 and abs(result['copy_score']) < 4 * result['copy_stderr']
  # Each occurrence's loss is the mean over its positions: skip.. half - 2 and half.. 2 half - 2.
  assert result['first_loss'] == pytest.approx(losses[:, 3:19].mean())
  assert result['repeat_loss'] == pytest.approx(losses[:, 20:].mean())


@pytest.mark.parametrize(
  'call, message',
  [
    (lambda: icl.repeated_random_windows(3, 10, []), 'set of token ids .* is empty'),
    (lambda: icl.repeated_random_windows(3, 1, IDS), 'half is 1'),
    (lambda: icl.copy_score(np.zeros((3, 19)), 9), 'the losses have 19 positions'),
    (lambda: icl.copy_score(np.zeros((3, 19)), 10, skip=9), 'skip is 9'),
  ],
)
def test_probe_settings_that_do_not_fit_are_refused(call, message):
  with pytest.raises(UserError, match=message):
    call()


def test_a_workdir_is_probed_at_each_checkpoint_and_left_unwritten(tmp_path):
  workdir, tokenizer, _ = _tiny_workdir(tmp_path)
  ids = icl.copy_ids(tokenizer)
  assert tokenizer.decode(ids) == icl.LOWERCASE
  assert tokenizer.decode(icl.copy_ids(tokenizer, '!~09')) == '!~09'
  with pytest.raises(UserError, match='as one token'):
    icl.copy_ids(tokenizer, 'aé')  # two bytes in UTF-8
  before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / 'run').rglob('*'))
  rows = icl.copy_workdir(workdir, half=16, n_windows=10)
  assert [(r['step'], r['tokens']) for r in rows] == [(10, 10 * 8 * 32), (20, 20 * 8 * 32)]
  assert rows[0]['copy_score'] != rows[1]['copy_score'] and rows[0]['copy_windows'] == 10
  for row in rows:  # one score per block, each a mean attention
    assert all(0 <= a <= 1 for a in row['previous_token'] + row['prefix_matching'])
    assert len(row['previous_token']) == len(row['prefix_matching']) == 2
  # Its losses are token_losses of the same windows.
  (latest,) = icl.copy_workdir(workdir, half=16, n_windows=10, every_checkpoint=False)
  assert latest['copy_score'] == pytest.approx(rows[1]['copy_score'], rel=1e-6)
  assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / 'run').rglob('*')) == before
  with pytest.raises(UserError, match=r'twice 33 tokens need a context of 65.* at most 32'):
    icl.copy_workdir(workdir, half=33)  # the tiny model's n_ctx is 64


@pytest.mark.parametrize('pos_emb', ['learned', 'rotary'])
def test_attention_patterns_reproduce_each_block_s_attention_output(pos_emb):
  # probs @ v through c_proj must give what the model's own attention layer gave.
  config = ModelConfig(
    vocab_size=V, n_ctx=20, n_layers=2, n_heads=2, d_model=16, d_ff=32, pos_emb=pos_emb
  )
  model = GPT(config)
  tokens_BxL = np.random.default_rng(0).integers(0, V, (3, 20)).astype(np.int32)
  params = model.init(jax.random.PRNGKey(1), jnp.asarray(tokens_BxL))['params']
  _, state = model.apply(
    {'params': params},
    jnp.asarray(tokens_BxL),
    capture_intermediates=lambda module, _: module.name in ('attn', 'c_attn'),
    mutable=['intermediates'],
  )
  patterns = icl.attention_patterns(config, params, tokens_BxL)
  assert len(patterns) == 2
  for i, probs_BxHxLxL in enumerate(patterns):
    assert probs_BxHxLxL.shape == (3, 2, 20, 20)
    np.testing.assert_allclose(probs_BxHxLxL.sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.triu(probs_BxHxLxL, 1) == 0)  # causal
    block = state['intermediates'][f'h_{i}']['attn']
    (qkv_BxLx3D,) = block['c_attn']['__call__']
    v_BxLxHxK = np.asarray(qkv_BxLx3D[..., 32:]).reshape(3, 20, 2, 8)
    out_BxLxD = np.einsum('bhls,bshk->blhk', probs_BxHxLxL, v_BxLxHxK).reshape(3, 20, 16)
    c_proj = params[f'h_{i}']['attn']['c_proj']
    (expected_BxLxD,) = block['__call__']
    np.testing.assert_allclose(
      out_BxLxD @ np.asarray(c_proj['kernel']) + np.asarray(c_proj['bias']),
      expected_BxLxD,
      rtol=1e-4,
      atol=1e-5,
    )


def test_induction_attention_reads_the_previous_token_and_the_prefix_match():
  half = 6
  L = 2 * half - 1
  previous_1x1xLxL = np.zeros((1, 1, L, L))
  previous_1x1xLxL[0, 0, np.arange(1, L), np.arange(L - 1)] = 1  # every query on t - 1
  previous_1x1xLxL[0, 0, 0, 0] = 1
  induction_1x1xLxL = np.zeros((1, 1, L, L))
  induction_1x1xLxL[0, 0, np.arange(L), np.arange(L)] = 1
  t = np.arange(half, L)
  induction_1x1xLxL[0, 0, t] = 0
  induction_1x1xLxL[0, 0, t, t - half + 1] = 1  # the repeat's queries on the token to copy
  scores = icl.induction_attention([previous_1x1xLxL, induction_1x1xLxL], half)
  assert scores == {'previous_token': [1.0, 0.0], 'prefix_matching': [0.0, 1.0]}
  offsets = icl.attention_offsets([previous_1x1xLxL, induction_1x1xLxL], half)
  assert offsets == [[(1, 1.0)], [(half - 1, 1.0)]]


def test_a_knocked_out_head_adds_nothing_to_the_attention_output():
  config = ModelConfig(vocab_size=V, n_ctx=20, n_layers=2, n_heads=2, d_model=16, d_ff=32)
  model = GPT(config)
  tokens_BxL = np.random.default_rng(0).integers(0, V, (3, 20)).astype(np.int32)
  params = model.init(jax.random.PRNGKey(1), jnp.asarray(tokens_BxL))['params']
  ablated = icl.without_heads(config, params, {1: [0]})
  kernel = np.asarray(ablated['h_1']['attn']['c_proj']['kernel'])
  assert np.all(kernel[:8] == 0)
  np.testing.assert_array_equal(kernel[8:], params['h_1']['attn']['c_proj']['kernel'][8:])
  assert np.any(np.asarray(params['h_1']['attn']['c_proj']['kernel'])[:8] != 0)  # not in place
  same = lambda p: np.asarray(model.apply({'params': p}, jnp.asarray(tokens_BxL)))
  np.testing.assert_array_equal(same(icl.without_heads(config, params, {})), same(params))
  assert not np.allclose(same(ablated), same(params))
