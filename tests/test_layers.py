"""The shared Transformer parts: masks, rotary positions, attention implementations."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gptjax.models.config import ModelConfig
from gptjax.models.layers import (
  attend,
  causal_mask,
  einsum_attention,
  padding_mask,
  rotary,
)


def _qkv(shape, seed=0):
  return (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(seed), 3))


def test_einsum_attention_with_a_mask_per_row_matches_a_loop_and_xla():
  q, k, v = _qkv((2, 6, 2, 4))
  lengths = np.array([6, 3])  # the second row's last three keys are padding
  mask_Bx1xS = padding_mask(jnp.asarray(np.arange(6)[None] < lengths[:, None], jnp.int32), 0)
  out = np.asarray(einsum_attention(q, k, v, mask_Bx1xS))
  for b, n in enumerate(lengths):
    for t in range(6):
      for h in range(2):
        scores = np.array([q[b, t, h] @ k[b, s, h] for s in range(n)]) / math.sqrt(4)
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(out[b, t, h], weights @ np.asarray(v[b, :n, h]), atol=1e-5)
  fused = jax.nn.dot_product_attention(q, k, v, mask=mask_Bx1xS[:, None], implementation='xla')
  np.testing.assert_allclose(fused, out, atol=1e-5)


class _CausalAttend(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, q, k, v, mask):
    return attend(self.config, q, k, v, mask, deterministic=True, causal=True)


def test_attend_combines_padding_and_causal_masks_the_same_way_in_every_implementation():
  q, k, v = _qkv((2, 5, 2, 8), seed=1)
  mask_Bx1xS = jnp.array([[[True] * 5], [[True] * 3 + [False] * 2]])
  outputs = {
    impl: _CausalAttend(
      ModelConfig(
        vocab_size=8, n_ctx=5, n_layers=1, n_heads=2, d_model=16, d_ff=16, attention_impl=impl
      )
    ).apply({}, q, k, v, mask_Bx1xS)
    for impl in ('einsum', 'xla')
  }
  np.testing.assert_allclose(outputs['xla'], outputs['einsum'], atol=1e-5)
  # The first row is plain causal attention; position 0 sees only itself.
  np.testing.assert_allclose(outputs['einsum'][:, 0], v[:, 0], atol=1e-6)


def test_a_query_with_nothing_to_attend_to_gives_no_nan():
  q, k, v = _qkv((1, 3, 1, 4), seed=2)
  out = einsum_attention(q, k, v, jnp.zeros((1, 1, 3), bool))
  assert np.all(np.isfinite(out))


def test_causal_mask_is_lower_triangular():
  np.testing.assert_array_equal(causal_mask(3)[0], np.tril(np.ones((3, 3), bool)))


def test_rotary_scores_depend_only_on_the_distance_between_positions():
  q, k, _ = _qkv((1, 1, 1, 8), seed=3)

  def score(query_position, key_position):
    rq = rotary(q, jnp.array([[query_position]]))
    rk = rotary(k, jnp.array([[key_position]]))
    return float(jnp.sum(rq * rk))

  np.testing.assert_allclose(score(7, 3), score(104, 100), rtol=1e-4)
  np.testing.assert_allclose(score(3, 3), float(jnp.sum(q * k)), rtol=1e-5)  # distance 0: unrotated
  assert abs(score(7, 3) - score(3, 7)) > 1e-3  # direction matters
  # A rotation keeps each vector's length.
  np.testing.assert_allclose(
    jnp.linalg.norm(rotary(q, jnp.array([[50]]))), jnp.linalg.norm(q), rtol=1e-5
  )


# Every product the models take: Dense, attention's two, cached attention's two, the loss's three.
