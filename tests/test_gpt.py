import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import configuration
from gptjax.configs import gpt1, gpt2_small
from gptjax.models import accounting
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.models.layers import causal_mask, einsum_attention, sinusoidal_positions

SMALL = ModelConfig(vocab_size=97, n_ctx=16, n_layers=2, n_heads=4, d_model=32, d_ff=64)


def init(config: ModelConfig, batch: int = 2, seed: int = 0):
  ids_BxL = jax.random.randint(
    jax.random.key(seed + 1), (batch, config.n_ctx), 0, config.vocab_size
  )
  params = GPT(config).init(jax.random.key(seed), ids_BxL)['params']
  return params, ids_BxL


@pytest.mark.parametrize('norm', ['pre', 'post'])
@pytest.mark.parametrize('pos_emb', ['learned', 'sinusoidal'])
@pytest.mark.parametrize('tie', [True, False])
def test_logits_shape_and_dtype(norm, pos_emb, tie):
  config = dataclasses.replace(SMALL, norm=norm, pos_emb=pos_emb, tie_embeddings=tie)
  params, ids_BxL = init(config)
  logits = GPT(config).apply({'params': params}, ids_BxL[:, :11])
  assert logits.shape == (2, 11, config.vocab_size) and logits.dtype == jnp.float32
  assert ('ln_f' in params) == (norm == 'pre')
  assert ('wpe' in params) == (pos_emb == 'learned')
  assert ('lm_head' in params) == (not tie)


@pytest.mark.parametrize('impl', ['einsum', 'xla'])
@pytest.mark.parametrize('norm', ['pre', 'post'])
def test_changing_later_tokens_leaves_earlier_logits_unchanged(impl, norm):
  config = dataclasses.replace(SMALL, attention_impl=impl, norm=norm)
  params, ids_BxL = init(config)
  model = GPT(config)
  logits = model.apply({'params': params}, ids_BxL)
  t = 6
  changed_ids = ids_BxL.at[:, t + 1 :].set((ids_BxL[:, t + 1 :] + 1) % config.vocab_size)
  changed = model.apply({'params': params}, changed_ids)
  np.testing.assert_array_equal(logits[:, : t + 1], changed[:, : t + 1])
  assert np.abs(logits[:, t + 1 :] - changed[:, t + 1 :]).max() > 1e-3


def test_gradient_of_output_at_t_ignores_inputs_after_t():
  """Causality through the gradient: d logits[t] / d embedding[s] is zero exactly when s > t."""
  # Untied, with one vocabulary row per position: ids 0..L-1 make the table the input embeddings.
  config = dataclasses.replace(SMALL, vocab_size=SMALL.n_ctx, tie_embeddings=False)
  params, _ = init(config, batch=1)
  model = GPT(config)
  positions_1xL = jnp.arange(config.n_ctx)[None]

  def logit_sum_at(t, x_LxD):
    return model.apply({'params': {**params, 'wte': {'embedding': x_LxD}}}, positions_1xL)[
      0, t
    ].sum()

  for t in (0, 7, config.n_ctx - 1):
    grad_LxD = jax.grad(logit_sum_at, argnums=1)(t, params['wte']['embedding'])
    per_position = np.abs(np.asarray(grad_LxD)).sum(axis=1)
    assert np.all(per_position[t + 1 :] == 0), t
    assert np.all(per_position[: t + 1] > 0), t


def test_fused_attention_matches_einsum_reference():
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, 24, 4, 16)) for key in keys)
  reference = einsum_attention(q, k, v, causal_mask(24))
  fused = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation='xla')
  np.testing.assert_allclose(fused, reference, atol=1e-5, rtol=1e-5)
  params, ids_BxL = init(SMALL)
  logits = {
    impl: GPT(dataclasses.replace(SMALL, attention_impl=impl)).apply({'params': params}, ids_BxL)
    for impl in ('einsum', 'xla')
  }
  np.testing.assert_allclose(logits['xla'], logits['einsum'], atol=1e-5, rtol=1e-5)


def test_einsum_attention_matches_a_loop_over_positions():
  q, k, v = (jax.random.normal(key, (1, 5, 1, 3)) for key in jax.random.split(jax.random.key(1), 3))
  out = einsum_attention(q, k, v, causal_mask(5))
  for t in range(5):
    scores = np.array([q[0, t, 0] @ k[0, s, 0] for s in range(t + 1)]) / math.sqrt(3)
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(out[0, t, 0], weights @ np.asarray(v[0, : t + 1, 0]), atol=1e-6)


def test_sinusoidal_positions_follow_the_paper():
  pe = np.asarray(sinusoidal_positions(50, 8))
  pos, i = 17, 2
  np.testing.assert_allclose(pe[pos, 2 * i], math.sin(pos / 10000 ** (2 * i / 8)), atol=1e-6)
  np.testing.assert_allclose(pe[pos, 2 * i + 1], math.cos(pos / 10000 ** (2 * i / 8)), atol=1e-6)


def test_dropout_is_driven_by_the_explicit_key_and_off_at_eval():
  config = dataclasses.replace(
    SMALL, embd_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1, attention_impl='einsum'
  )
  params, ids_BxL = init(config)
  model = GPT(config)
  apply = lambda seed: model.apply(
    {'params': params}, ids_BxL, deterministic=False, rngs={'dropout': jax.random.key(seed)}
  )
  np.testing.assert_array_equal(apply(1), apply(1))
  assert np.abs(apply(1) - apply(2)).max() > 1e-3
  no_dropout = GPT(SMALL).apply({'params': params}, ids_BxL)
  np.testing.assert_allclose(model.apply({'params': params}, ids_BxL), no_dropout, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  params, ids_BxL = init(SMALL)
  bf16 = GPT(dataclasses.replace(SMALL, dtype='bfloat16')).apply({'params': params}, ids_BxL)
  fp32 = GPT(SMALL).apply({'params': params}, ids_BxL)
  assert bf16.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_gpt2_initialisation():
  config = dataclasses.replace(SMALL, d_model=256, d_ff=1024, n_layers=8)
  params, _ = init(config)
  block = params['h_3']
  assert np.std(block['mlp']['c_fc']['kernel']) == pytest.approx(0.02, rel=0.05)
  for residual_out in (block['attn']['c_proj']['kernel'], block['mlp']['c_proj']['kernel']):
    assert np.std(residual_out) == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
  assert not np.any(block['attn']['c_attn']['bias'])
  assert np.all(block['ln_1']['scale'] == 1)


def _paper_config(module) -> ModelConfig:
  config = module.get_config()
  return configuration.model_config(config, config.tokenizer.vocab_size)


def test_gpt2_small_has_124439808_parameters():
  count = accounting.count_params(_paper_config(gpt2_small))
  assert count.total == 124_439_808
  d, layers = 768, 12
  per_layer = 12 * d * d + 13 * d  # 4d^2 attention + 8d^2 MLP; 9d biases + 4d LayerNorm
  assert count.non_embedding == layers * per_layer + 2 * d  # + final LayerNorm


def test_gpt1_has_116534784_parameters():
  count = accounting.count_params(_paper_config(gpt1))
  # 40,478 x 768 tokens + 512 x 768 positions + 12 post-LN blocks, no final LayerNorm ("117M").
  assert count.total == 40_478 * 768 + 512 * 768 + 12 * (12 * 768 * 768 + 13 * 768) == 116_534_784


def test_flops_per_token_is_6n_plus_attention():
  config = _paper_config(gpt2_small)
  n = accounting.count_params(config).non_embedding
  assert accounting.flops_per_token(config) == 6 * n + 12 * 12 * 1024 * 768
  assert accounting.flops_per_token(config, seq_len=512) == 6 * n + 12 * 12 * 512 * 768


@pytest.mark.parametrize('policy, max_kept_share', [('full', 1 / 5), ('dots_saveable', 0.9)])
def test_remat_changes_memory_not_results(policy, max_kept_share):
  config = dataclasses.replace(SMALL, n_layers=4, d_model=32, d_ff=128, n_ctx=64)
  params, ids_BxL = init(config, batch=4)
  plain, remat = GPT(config), GPT(dataclasses.replace(config, remat=policy))
  assert jax.tree.structure(remat.init(jax.random.key(0), ids_BxL)['params']) == jax.tree.structure(
    params
  )

  def loss_fn(model):
    return lambda p: model.apply({'params': p}, ids_BxL).astype(jnp.float32).std()

  np.testing.assert_allclose(loss_fn(remat)(params), loss_fn(plain)(params), rtol=1e-6)
  grads = {
    name: jax.grad(loss_fn(model))(params) for name, model in (('plain', plain), ('remat', remat))
  }
  for a, b in zip(jax.tree.leaves(grads['plain']), jax.tree.leaves(grads['remat'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  # What the backward pass keeps: the residuals held by the VJP closure (params excluded).
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  kept = {
    name: sum(x.nbytes for x in jax.tree.leaves(jax.vjp(loss_fn(model), params)[1])) - param_bytes
    for name, model in (('plain', plain), ('remat', remat))
  }
  assert kept['remat'] < kept['plain'] * max_kept_share, kept


def stack_layers(params, n_layers: int):
  """Unscanned parameters (h_0, h_1, ...) in the layout of scan_layers=True (h/block, stacked)."""
  layers = [params.pop(f'h_{i}') for i in range(n_layers)]
  return {**params, 'h': {'block': jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}}


@pytest.mark.parametrize('remat', ['none', 'full'])
def test_scanned_layers_compute_what_the_unrolled_ones_do(remat):
  config = dataclasses.replace(SMALL, n_layers=3)
  params, ids_BxL = init(config)
  scanned = GPT(dataclasses.replace(config, scan_layers=True, remat=remat))
  scanned_params = stack_layers(dict(params), config.n_layers)
  assert jax.tree.structure(
    scanned.init(jax.random.key(0), ids_BxL)['params']
  ) == jax.tree.structure(scanned_params)
  loss = lambda model: lambda p: model.apply({'params': p}, ids_BxL).std()
  np.testing.assert_allclose(loss(scanned)(scanned_params), loss(GPT(config))(params), rtol=1e-6)
  grads = jax.grad(loss(GPT(config)))(params)
  np.testing.assert_allclose(
    jax.grad(loss(scanned))(scanned_params)['h']['block']['mlp']['c_fc']['kernel'],
    jnp.stack([grads[f'h_{i}']['mlp']['c_fc']['kernel'] for i in range(3)]),
    rtol=1e-4,
    atol=1e-7,
  )
