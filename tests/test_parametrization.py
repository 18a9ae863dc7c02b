"""muP and CompleteP: which parameters each rule touches, that the base model is the standard one,
and the coordinate checks of Yang et al. (2021) and Dey et al. (2025): after a few Adam steps the
activations of every layer keep their size as the model widens (muP) or deepens (CompleteP), and
under the standard parametrization they do not."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import configuration
from gptjax.configs import default
from gptjax.errors import UserError
from gptjax.models import coordinate_check, parametrization, registry
from gptjax.models.config import ModelConfig
from gptjax.training.optimizer import make_optimizer


def _config(**fields) -> ModelConfig:
  shape = dict(vocab_size=256, n_ctx=32, n_layers=2, n_heads=4, d_model=64, d_ff=256)
  return ModelConfig(**{**shape, **fields})


def _paths(tree, keep) -> set[str]:
  return {
    '/'.join(k.key for k in path)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    if keep(leaf)
  }


def test_hidden_matrices_are_the_kernels_whose_both_dimensions_grow():
  for scan_layers in (False, True):
    model = registry.build(
      _config(parametrization='mup', base_d_model=32, tie_embeddings=False, scan_layers=scan_layers)
    )
    ratios = registry.fan_in_ratios(model)
    block = 'h/block' if scan_layers else 'h_0'
    expected = {
      f'{block}/attn/c_attn/kernel',
      f'{block}/attn/c_proj/kernel',
      f'{block}/mlp/c_fc/kernel',
      f'{block}/mlp/c_proj/kernel',
    }
    if not scan_layers:
      expected |= {name.replace('h_0', 'h_1') for name in expected}
    assert _paths(ratios, lambda r: r != 1.0) == expected
    assert set(jax.tree.leaves(ratios)) == {1.0, 2.0}  # wte, wpe, lm_head, biases, LN: 1


def test_bert_and_encoder_decoder_get_the_same_rules():
  bert = registry.build(_config(architecture='bert', parametrization='mup', base_d_model=32))
  hidden = _paths(registry.fan_in_ratios(bert), lambda r: r != 1.0)
  assert 'mlm_dense/kernel' in hidden and 'wte/embedding' not in hidden
  seq2seq = registry.build(
    _config(
      architecture='encoder_decoder', n_encoder_layers=1, parametrization='mup', base_d_model=32
    )
  )
  hidden = _paths(registry.fan_in_ratios(seq2seq), lambda r: r != 1.0)
  assert any('cross_attn/c_kv' in name for name in hidden) and all(
    name.endswith('kernel') for name in hidden
  )


def test_hidden_init_variance_falls_with_fan_in_and_the_rest_keeps_init_std():
  model = registry.build(_config(d_model=256, d_ff=1024, parametrization='mup', base_d_model=32))
  params = registry.init_params(model, jax.random.PRNGKey(0))
  c_fc = params['h_0']['mlp']['c_fc']['kernel']
  assert float(jnp.std(c_fc)) == pytest.approx(0.02 / np.sqrt(8), rel=0.02)
  assert float(jnp.std(params['wte']['embedding'])) == pytest.approx(0.02, rel=0.02)


def test_adam_step_of_hidden_matrices_is_divided_by_the_width_multiplier():
  model = registry.build(_config(d_model=128, d_ff=512, parametrization='mup', base_d_model=32))
  params = registry.init_params(model, jax.random.PRNGKey(0))
  optimizer = make_optimizer(
    coordinate_check.train_config(1e-2, 10), registry.learning_rate_multipliers(model)
  )
  grads = jax.tree.map(jnp.ones_like, params)  # Adam's first step is lr * sign(g)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates['h_0']['attn']['c_attn']['kernel'], -1e-2 / 4, rtol=1e-5)
  np.testing.assert_allclose(updates['wte']['embedding'], -1e-2, rtol=1e-5)


@pytest.mark.parametrize('architecture', ['gpt', 'bert', 'encoder_decoder'])
def test_mup_and_completep_at_the_base_shape_compute_what_sp_does(architecture):
  shape = dict(architecture=architecture, n_encoder_layers=2)  # each stack at base depth
  sp = registry.build(_config(**shape))
  mup = registry.build(
    _config(
      **shape,
      parametrization='mup',
      base_d_model=64,
      depth_scaling='completep',
      base_n_layers=2,
    )
  )
  assert registry.learning_rate_multipliers(mup) is None
  key = jax.random.PRNGKey(0)
  params = registry.init_params(sp, key)
  jax.tree.map(np.testing.assert_array_equal, params, registry.init_params(mup, key))
  inputs = registry.get(architecture).example_inputs(sp.config)
  np.testing.assert_array_equal(
    sp.apply({'params': params}, *inputs), mup.apply({'params': params}, *inputs)
  )


def test_the_mup_output_multiplier_scales_the_logits():
  one = registry.build(_config(d_model=128, d_ff=512, parametrization='mup', base_d_model=32))
  two = registry.build(dataclasses.replace(one.config, mup_output_multiplier=2.0))
  params = registry.init_params(one, jax.random.PRNGKey(0))
  ids = jnp.zeros((1, 8), jnp.int32)
  np.testing.assert_array_equal(
    two.apply({'params': params}, ids), 2 * one.apply({'params': params}, ids)
  )


def test_completep_scales_residual_branches_by_base_depth_over_depth():
  cfg = _config(n_layers=8, depth_scaling='completep', base_n_layers=2)
  assert parametrization.branch_multiplier(cfg, 8) == 0.25
  assert parametrization.residual_init_layers(cfg) == 2
  params = registry.init_params(registry.build(cfg), jax.random.PRNGKey(0))
  c_proj = params['h_0']['mlp']['c_proj']['kernel']
  assert float(jnp.std(c_proj)) == pytest.approx(0.02 / np.sqrt(4), rel=0.05)


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'parametrization': 'mup'}, 'needs model.base_d_model'),
    ({'parametrization': 'mup', 'base_d_model': 30}, 'not divisible by model.n_heads'),
    ({'depth_scaling': 'completep'}, 'needs model.base_n_layers'),
    ({'depth_scaling': 'completep', 'base_n_layers': 2, 'norm': 'post'}, "needs model.norm='pre'"),
    ({'parametrization': 'spp'}, 'choose one of sp, mup'),
  ],
)
def test_incomplete_parametrizations_are_refused(overrides, message):
  config = default.get_config()
  config.model.update(overrides)
  with pytest.raises(UserError, match=message):
    configuration.validate(config, device_count=1)


# ---------------------------------------------------------------------------------------------
# Coordinate checks


WIDTHS = (32, 64, 128, 256)


@pytest.mark.slow
def test_width_coordinate_check_mup_flat_sp_grows():
  def spread(parametrization: str, seeds: int) -> dict[str, float]:
    return coordinate_check.spread(
      [
        coordinate_check.activation_rms(
          _config(d_model=w, d_ff=4 * w, parametrization=parametrization, base_d_model=32),
          seeds=seeds,
        )
        for w in WIDTHS
      ]
    )

  mup = spread('mup', seeds=3)
  assert 'logits' in mup and 'h_1/mlp/c_fc' in mup and max(mup.values()) <= 2.0, mup
  sp = spread('sp', seeds=1)
  assert sp['logits'] > 2.0 and sp['h_1'] > 5.0, sp  # 8x wider: logits 3.7x, residual 10x


@pytest.mark.slow
def test_depth_coordinate_check_completep_flat_sp_grows():
  depths = (2, 4, 8, 16)

  def spread(depth_scaling: str) -> dict[str, float]:
    rows = []
    for n_layers in depths:
      rms = coordinate_check.activation_rms(
        _config(n_layers=n_layers, depth_scaling=depth_scaling, base_n_layers=2)
      )
      rows.append(
        {
          'residual stream out': rms[f'h_{n_layers - 1}'],
          'attention branches': np.mean([rms[f'h_{i}/attn'] for i in range(n_layers)]),
          'MLP branches': np.mean([rms[f'h_{i}/mlp'] for i in range(n_layers)]),
          'logits': rms['logits'],
        }
      )
    return coordinate_check.spread(rows)

  completep = spread('completep')
  assert max(completep.values()) <= 2.0, completep
  none = spread('none')
  assert none['residual stream out'] > 4.0, none  # 8x deeper: ~10x


def test_base_width_config_keeps_the_heads_and_scales_the_mlp():
  base = parametrization.base_width_config(_config(d_model=256, d_ff=1024, base_d_model=32))
  assert dataclasses.astuple(base)[:6] == (256, 32, 2, 4, 32, 128)
