"""Matrix products with float32 accumulation, laid out for XLA's CPU backend in
bfloat16.
"""

import functools
import math

import jax
import jax.numpy as jnp


def matmul(spec: str, a: jax.Array, b: jax.Array, dtype: str = 'float32') -> jax.Array:
  """jnp.einsum(spec, a, b) for a matrix product (each index of an operand appears in the other
  operand or in the output), with the operands in `dtype`.

  In a low-precision dtype (bfloat16, float16) the product accumulates in float32 and returns
  float32, forward and backward (the gradients' products take the output gradient rounded to
  `dtype`), so the work between products stays in float32: what accelerators' matrix units do,
  and on a CPU the only fast low-precision product XLA has. There bfloat16 x bfloat16 -> float32
  runs on AMX (Intel Sapphire Rapids and later) at several times the float32 rate, while a product
  with a bfloat16 result, like bfloat16 elementwise work, is computed in float32 with conversions.
  """
  if jnp.dtype(dtype) == jnp.float32:
    return jnp.einsum(spec, a, b)
  return _float32_accumulating_einsum(spec, a.astype(dtype), b.astype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _float32_accumulating_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return _canonical_product(spec, a, b)


def _float32_accumulating_einsum_fwd(spec, a, b):
  return _canonical_product(spec, a, b), (a, b)


def _float32_accumulating_einsum_bwd(spec, operands, grad_out):
  a, b = operands
  spec_a, spec_b, spec_out = _operand_specs(spec)
  grad_out = grad_out.astype(a.dtype)
  grad_a = _canonical_product(f'{spec_out},{spec_b}->{spec_a}', grad_out, b)
  grad_b = _canonical_product(f'{spec_a},{spec_out}->{spec_b}', a, grad_out)
  return grad_a.astype(a.dtype), grad_b.astype(b.dtype)


_float32_accumulating_einsum.defvjp(
  _float32_accumulating_einsum_fwd, _float32_accumulating_einsum_bwd
)


def _operand_specs(spec: str) -> tuple[str, str, str]:
  """'ab,bc->ac' -> ('ab', 'bc', 'ac')."""
  inputs, spec_out = spec.split('->')
  spec_a, spec_b = inputs.split(',')
  return spec_a, spec_b, spec_out


def _canonical_product(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """einsum(spec, a, b) with float32 accumulation, computed as a product whose left operand is laid
  out in memory as (batch, free, contracted) and its right as (batch, contracted, free) or
  (batch, free, contracted).

  XLA's CPU backend multiplies bfloat16 only in those layouts; a product in any other (the
  gradient of a weight, x^T g, contracts both operands' leading axis) has its operands converted to
  float32 and runs at a fraction of the speed. So operands are transposed first, and the result
  after if need be, choosing the operand order that moves the fewest elements (XLA's CPU transposes
  are slow). XLA would fold a plain transpose back into the product (and, for the result's, then
  fail at run time: "Unsupported element type for DotThunk"), hence transpose_copy. GPUs and TPUs
  multiply any layout, so there the product is left to XLA as it is.
  """
  if jax.default_backend() != 'cpu':
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
  spec_a, spec_b, spec_out = _operand_specs(spec)
  sizes = dict(zip(spec_a, a.shape)) | dict(zip(spec_b, b.shape))
  batch = ''.join(i for i in spec_out if i in spec_a and i in spec_b)
  contracted = ''.join(i for i in spec_a if i in spec_b and i not in spec_out)

  def layouts(spec_x, spec_y):
    free_x = ''.join(i for i in spec_x if i not in spec_y)
    free_y = ''.join(i for i in spec_y if i not in spec_x)
    rhs_options = (batch + contracted + free_y, batch + free_y + contracted)
    return (
      batch + free_x + contracted,
      spec_y if spec_y in rhs_options else rhs_options[0],
      batch + free_x + free_y,
    )

  def moved(spec_x, spec_y):  # elements transposed when x is the left operand
    return sum(
      math.prod(sizes[i] for i in have)
      for have, want in zip((spec_x, spec_y, spec_out), layouts(spec_x, spec_y))
      if have != want
    )

  if moved(spec_b, spec_a) < moved(spec_a, spec_b):
    (spec_a, a), (spec_b, b) = (spec_b, b), (spec_a, a)
  lhs_spec, rhs_spec, product_spec = layouts(spec_a, spec_b)
  assert sorted(product_spec) == sorted(spec_out), f'{spec}: not a matrix product'
  lhs = transpose_copy(a, [spec_a.index(i) for i in lhs_spec])
  rhs = transpose_copy(b, [spec_b.index(i) for i in rhs_spec])
  product = jnp.einsum(
    f'{lhs_spec},{rhs_spec}->{product_spec}', lhs, rhs, preferred_element_type=jnp.float32
  )
  return transpose_copy(product, [product_spec.index(i) for i in spec_out])


def transpose_copy(x: jax.Array, axes: list[int]) -> jax.Array:
  """jnp.transpose(x, axes) behind a pad and a slice, which keep XLA from folding it into the
  product that makes or reads it. Use it for a transpose of matmul's result: folded, it would
  turn a bfloat16 product into one XLA's CPU backend has no kernel for (see _canonical_product)."""
  if axes == sorted(axes):
    return x
  padded = jnp.transpose(jnp.pad(x, [(0, 1)] + [(0, 0)] * (x.ndim - 1)), axes)
  return jax.lax.slice_in_dim(padded, 0, x.shape[0], axis=axes.index(0))


def dense_dot_general(
  x_NxD: jax.Array, kernel_DxF: jax.Array, dimension_numbers, precision=None
) -> jax.Array:
  """nn.Dense's product (x's last axis with the kernel's first) through matmul, in the dtype
  Dense cast its operands to."""
  del dimension_numbers, precision  # always Dense's contraction, at the default precision
  out = matmul('nd,df->nf', x_NxD.reshape(-1, x_NxD.shape[-1]), kernel_DxF, x_NxD.dtype)
  return out.reshape(*x_NxD.shape[:-1], kernel_DxF.shape[1])
