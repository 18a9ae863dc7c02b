import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax.models import gpt
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.models.losses import fused_cross_entropy


def unfused_cross_entropy(hidden_NxD, embedding_VxD, targets_N):
  logits_NxV = jnp.dot(hidden_NxD, embedding_VxD.T, preferred_element_type=jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits_NxV, targets_N).mean()


@pytest.mark.parametrize('n_tokens, chunk', [(300, 64), (300, 300), (300, 1000), (301, 7)])
def test_fused_loss_and_gradients_equal_the_unfused_ones(n_tokens, chunk):
  keys = jax.random.split(jax.random.key(0), 3)
  hidden_NxD = jax.random.normal(keys[0], (n_tokens, 16))
  embedding_VxD = jax.random.normal(keys[1], (50, 16))
  targets_N = jax.random.randint(keys[2], (n_tokens,), 0, 50)
  fused = lambda h, e: fused_cross_entropy(h, e, targets_N, chunk)
  unfused = lambda h, e: unfused_cross_entropy(h, e, targets_N)
  loss, grads = jax.value_and_grad(fused, argnums=(0, 1))(hidden_NxD, embedding_VxD)
  want_loss, want_grads = jax.value_and_grad(unfused, argnums=(0, 1))(hidden_NxD, embedding_VxD)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(fused(hidden_NxD, embedding_VxD), want_loss, rtol=1e-6)  # no grad
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # The incoming cotangent scales the gradients (here: loss times 3).
  scaled = jax.grad(lambda h: 3 * fused(h, embedding_VxD))(hidden_NxD)
  np.testing.assert_allclose(scaled, 3 * want_grads[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('tie', [True, False])
def test_train_loss_equals_optax_on_the_models_logits(tie):
  config = ModelConfig(
    vocab_size=97, n_ctx=16, n_layers=2, n_heads=4, d_model=32, d_ff=64, tie_embeddings=tie
  )
  model = GPT(config)
  batch_BxL1 = jax.random.randint(jax.random.key(1), (3, 17), 0, config.vocab_size)
  params = model.init(jax.random.key(0), batch_BxL1[:, :-1])['params']

  def reference(params):
    logits_BxLxV = model.apply({'params': params}, batch_BxL1[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch_BxL1[:, 1:]).mean()

  loss, grads = jax.value_and_grad(lambda p: gpt.next_token_cross_entropy(model, p, batch_BxL1))(
    params
  )
  want_loss, want_grads = jax.value_and_grad(reference)(params)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  jax.tree.map(
    lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7), grads, want_grads
  )


def test_bfloat16_hidden_states_keep_a_float32_loss():
  keys = jax.random.split(jax.random.key(0), 3)
  hidden_NxD = jax.random.normal(keys[0], (64, 16)).astype(jnp.bfloat16)
  embedding_VxD = jax.random.normal(keys[1], (50, 16))
  targets_N = jax.random.randint(keys[2], (64,), 0, 50)
  loss, (grad_hidden, grad_embedding) = jax.value_and_grad(fused_cross_entropy, argnums=(0, 1))(
    hidden_NxD, embedding_VxD, targets_N, 16
  )
  assert loss.dtype == jnp.float32
  assert grad_hidden.dtype == jnp.bfloat16 and grad_embedding.dtype == jnp.float32
  want = unfused_cross_entropy(
    hidden_NxD.astype(jnp.float32),
    embedding_VxD.astype(jnp.bfloat16).astype(jnp.float32),
    targets_N,
  )
  np.testing.assert_allclose(loss, want, rtol=1e-3)
