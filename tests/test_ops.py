"""matmul: float32 accumulation of bfloat16 operands, forward and backward, against einsum."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.models.config import ModelConfig
from gptjax.models.ops import matmul

PRODUCTS = [
  ('nd,df->nf', (12, 8), (8, 5)),
  ('nqk,nsk->nqs', (3, 6, 4), (3, 7, 4)),
  ('nqs,nsk->nqk', (3, 6, 7), (3, 7, 4)),
  ('blhk,bhks->bhls', (2, 3, 2, 4), (2, 2, 4, 5)),
  ('bhls,bhsk->blhk', (2, 2, 3, 5), (2, 2, 5, 4)),
  ('td,vd->tv', (6, 8), (9, 8)),
  ('tv,vd->td', (6, 9), (9, 8)),
  ('td,tv->dv', (6, 8), (6, 9)),
]


@pytest.mark.parametrize('spec,shape_a,shape_b', PRODUCTS)
def test_bfloat16_matmul_is_the_float32_product_of_rounded_operands_with_its_gradients(
  spec, shape_a, shape_b
):
  key_a, key_b, key_out = jax.random.split(jax.random.key(0), 3)
  a, b = jax.random.normal(key_a, shape_a), jax.random.normal(key_b, shape_b)
  bf16 = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
  out = matmul(spec, a, b, 'bfloat16')
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, jnp.einsum(spec, bf16(a), bf16(b)), rtol=1e-5, atol=1e-5)
  # The gradients' products take the output gradient rounded to bfloat16 and return the
  # operands' gradients in the operands' dtype.
  grad_out = jax.random.normal(key_out, out.shape)
  grad_a, grad_b = jax.vjp(lambda x, y: matmul(spec, x, y, 'bfloat16'), a, b)[1](grad_out)
  want_a, want_b = jax.vjp(lambda x, y: jnp.einsum(spec, x, y), bf16(a), bf16(b))[1](bf16(grad_out))
  np.testing.assert_allclose(grad_a, bf16(want_a), rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(grad_b, bf16(want_b), rtol=1e-2, atol=1e-2)


def test_float32_matmul_is_einsum():
  a, b = jax.random.normal(jax.random.key(0), (5, 3)), jax.random.normal(jax.random.key(1), (3, 4))
  np.testing.assert_array_equal(matmul('ij,jk->ik', a, b), jnp.einsum('ij,jk->ik', a, b))


@pytest.mark.parametrize('scan_layers', [False, True])
def test_bfloat16_gradients_multiply_in_bfloat16_on_cpu_and_track_float32(scan_layers):
  """XLA's CPU backend converts a bfloat16 product it has no fast kernel for to float32 (a fifth
  of the speed on AMX machines), or, if it meets one late, fails at run time; matmul lays its
  operands out so that neither happens. One chunk of the loss: its transpose meets the product."""
  from gptjax.models.gpt import GPT
  from gptjax.models.losses import fused_cross_entropy

  config = ModelConfig(
    vocab_size=64, n_ctx=16, n_layers=2, n_heads=2, d_model=32, d_ff=64, scan_layers=scan_layers
  )
  ids_BxL = jax.random.randint(jax.random.key(1), (2, 16), 0, 64)
  params = GPT(config).init(jax.random.key(0), ids_BxL)['params']

  def gradients(dtype):
    model = GPT(dataclasses.replace(config, dtype=dtype))

    def loss(params):
      _, hidden_BxLxD = model.apply({'params': params}, ids_BxL, return_hidden=True)
      return fused_cross_entropy(
        hidden_BxLxD.astype(dtype).reshape(-1, 32), params['wte']['embedding'], ids_BxL.reshape(-1)
      )

    return jax.jit(jax.grad(loss)).lower(params).compile()

  compiled = gradients('bfloat16')
  hlo = compiled.as_text()
  types = dict(re.findall(r'%([\w.-]+) = (\w+)\[', hlo))
  products = re.findall(r'= \w+\[[\d,]*\]\S* dot\(%([\w.-]+), %([\w.-]+)\)', hlo)
  assert len(products) >= 3 * 6  # forward and two gradients of c_attn, c_proj, c_fc, mlp c_proj,
  # attention's two products and the logits
  assert {types[operand] for product in products for operand in product} == {'bf16'}
  bf16, fp32 = compiled(params), gradients('float32')(params)
  for leaf_bf16, leaf_fp32 in zip(jax.tree.leaves(bf16), jax.tree.leaves(fp32)):
    assert np.linalg.norm(leaf_bf16 - leaf_fp32) <= 0.05 * np.linalg.norm(leaf_fp32) + 1e-6
