import jax
import numpy as np
import pytest

from gptjax.configs import default
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.training.optimizer import learning_rate_schedule, weight_decay_mask


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
  train = default.get_config().train
  train.update(lr=1e-3, warmup_steps=100, steps=1000, min_lr_ratio=0.1)
  schedule = learning_rate_schedule(train)
  assert schedule(0) == 0
  assert schedule(50) == pytest.approx(5e-4)
  assert schedule(100) == pytest.approx(1e-3)
  assert schedule(550) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-4)  # cosine midpoint
  assert schedule(1000) == pytest.approx(1e-4)


def test_weight_decay_applies_to_matrices_only():
  config = ModelConfig(
    vocab_size=50, n_ctx=8, n_layers=1, n_heads=2, d_model=8, d_ff=16, tie_embeddings=False
  )
  params = GPT(config).init(jax.random.key(0), np.zeros((1, 8), np.int32))['params']
  mask = weight_decay_mask(params)
  decayed = {
    '/'.join(k.key for k in path) for path, m in jax.tree_util.tree_leaves_with_path(mask) if m
  }
  assert decayed == {
    'h_0/attn/c_attn/kernel',
    'h_0/attn/c_proj/kernel',
    'h_0/mlp/c_fc/kernel',
    'h_0/mlp/c_proj/kernel',
    'lm_head/kernel',
  }


def test_linear_schedule_warms_up_then_falls_linearly_to_the_floor():
  train = default.get_config().train
  train.update(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.0, schedule='linear')
  schedule = learning_rate_schedule(train)
  assert schedule(0) == 0
  assert schedule(5) == pytest.approx(5e-4)
  assert schedule(10) == pytest.approx(1e-3)
  assert schedule(60) == pytest.approx(5e-4)
  assert schedule(110) == pytest.approx(0.0, abs=1e-12)
