"""The Transformer's parts, shared by its three models (Vaswani et al. 2017; Radford et al. 2018;
Devlin et al. 2019):

  embeddings        token embedding + a position signal: a learned table, the fixed sinusoids,
                    or rotary (which rotates queries and keys inside attention instead)
  attention         softmax(q k^T / sqrt(K), masked) v per head; self-attention that is causal
                    (a decoder) or bidirectional (an encoder), and cross-attention whose queries
                    come from the decoder and keys and values from the encoder's output
  feed-forward      position-wise Dense -> GELU -> Dense
  block             those sublayers, each inside residual + LayerNorm (pre- or post-LN)
  stack_blocks      n blocks, unrolled or with nn.scan, with optional rematerialisation

gptjax/model.py (GPT), gptjax/bert.py and gptjax/encoder_decoder.py are short compositions of these.
Array names carry their shapes: B batch, L query positions, S key positions, D model width,
H heads, K head width, F feed-forward width. Masks are booleans, True where attention is allowed,
of shape (B or 1, L, S).
"""
import dataclasses
import functools
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  n_ctx: int  # maximum sequence length (the learned position table's size)
  n_layers: int  # decoder blocks (GPT, encoder-decoder) or encoder blocks (BERT)
  n_heads: int
  d_model: int
  d_ff: int  # feed-forward hidden width, 4 * d_model in GPT-1/2 and BERT
  architecture: Literal['gpt', 'bert', 'encoder_decoder'] = 'gpt'
  n_encoder_layers: int = 0  # encoder blocks of the encoder-decoder
  norm: Literal['pre', 'post'] = 'pre'  # 'pre' = GPT-2, 'post' = GPT-1 / original Transformer / BERT
  pos_emb: Literal['learned', 'sinusoidal', 'rotary'] = 'learned'
  tie_embeddings: bool = True  # output projection = token embedding transposed
  type_vocab_size: int = 2  # BERT's segment (sentence A / B) embeddings
  embd_dropout: float = 0.0
  attn_dropout: float = 0.0  # on attention probabilities; only the 'einsum' implementation has it
  resid_dropout: float = 0.0  # on each sublayer output before the residual add
  attention_impl: Literal['einsum', 'xla', 'cudnn'] = 'einsum'  # 'xla'/'cudnn': jax.nn.dot_product_attention
  layer_norm_eps: float = 1e-5
  init_std: float = 0.02
  # What a block keeps for the backward pass: 'none' recomputes nothing; 'full' keeps only the
  # block's input and recomputes the rest; 'dots_saveable' keeps matmul outputs and recomputes
  # the cheap elementwise work (LayerNorm, GELU, softmax) between them.
  remat: Literal['none', 'full', 'dots_saveable'] = 'none'
  # One block's computation applied n_layers times with jax.lax.scan (parameters stacked along a
  # leading axis, under params[name]['block']): compile time stops growing with depth.
  scan_layers: bool = False
  # Compute dtype of the matrix products' operands (and the attention cache); they accumulate in
  # float32, and activations between them stay float32 (see matmul). 'bfloat16' on GPU/TPU and
  # on CPUs with AMX.
  dtype: str = 'float32'
  param_dtype: str = 'float32'


# ---------------------------------------------------------------------------------------------
# Matrix products


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


_float32_accumulating_einsum.defvjp(_float32_accumulating_einsum_fwd,
                                    _float32_accumulating_einsum_bwd)


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
    return (batch + free_x + contracted, spec_y if spec_y in rhs_options else rhs_options[0],
            batch + free_x + free_y)

  def moved(spec_x, spec_y):  # elements transposed when x is the left operand
    return sum(math.prod(sizes[i] for i in have) for have, want in zip(
        (spec_x, spec_y, spec_out), layouts(spec_x, spec_y)) if have != want)

  if moved(spec_b, spec_a) < moved(spec_a, spec_b):
    (spec_a, a), (spec_b, b) = (spec_b, b), (spec_a, a)
  lhs_spec, rhs_spec, product_spec = layouts(spec_a, spec_b)
  assert sorted(product_spec) == sorted(spec_out), f'{spec}: not a matrix product'
  lhs = transpose_copy(a, [spec_a.index(i) for i in lhs_spec])
  rhs = transpose_copy(b, [spec_b.index(i) for i in rhs_spec])
  product = jnp.einsum(f'{lhs_spec},{rhs_spec}->{product_spec}', lhs, rhs,
                       preferred_element_type=jnp.float32)
  return transpose_copy(product, [product_spec.index(i) for i in spec_out])


def transpose_copy(x: jax.Array, axes: list[int]) -> jax.Array:
  """jnp.transpose(x, axes) behind a pad and a slice, which keep XLA from folding it into the
  product that makes or reads it. Use it for a transpose of matmul's result: folded, it would
  turn a bfloat16 product into one XLA's CPU backend has no kernel for (see _canonical_product)."""
  if axes == sorted(axes):
    return x
  padded = jnp.transpose(jnp.pad(x, [(0, 1)] + [(0, 0)] * (x.ndim - 1)), axes)
  return jax.lax.slice_in_dim(padded, 0, x.shape[0], axis=axes.index(0))


def _dense_dot_general(x_NxD: jax.Array, kernel_DxF: jax.Array, dimension_numbers,
                       precision=None) -> jax.Array:
  """nn.Dense's product (x's last axis with the kernel's first) through matmul, in the dtype
  Dense cast its operands to."""
  del dimension_numbers, precision  # always Dense's contraction, at the default precision
  out = matmul('nd,df->nf', x_NxD.reshape(-1, x_NxD.shape[-1]), kernel_DxF, x_NxD.dtype)
  return out.reshape(*x_NxD.shape[:-1], kernel_DxF.shape[1])


# ---------------------------------------------------------------------------------------------
# Positions and masks


def sinusoidal_positions(n_ctx: int, d_model: int) -> jax.Array:
  """The fixed encoding of "Attention Is All You Need": sin on even, cos on odd channels."""
  position_Lx1 = jnp.arange(n_ctx, dtype=jnp.float32)[:, None]
  inv_freq_D2 = jnp.exp(-math.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
  angle_LxD2 = position_Lx1 * inv_freq_D2
  return jnp.stack([jnp.sin(angle_LxD2), jnp.cos(angle_LxD2)], axis=-1).reshape(n_ctx, d_model)


def rotary(x_BxLxHxK: jax.Array, positions_BxL: jax.Array) -> jax.Array:
  """Rotary position embedding (Su et al. 2021): channel pairs (i, i + K/2) rotate by the angle
  position * 10000^(-2i/K), so q . k depends on the positions only through their difference."""
  half = x_BxLxHxK.shape[-1] // 2
  inv_freq_K2 = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxLx1xK2 = (positions_BxL[..., None].astype(jnp.float32) * inv_freq_K2)[:, :, None, :]
  cos, sin = jnp.cos(angle_BxLx1xK2), jnp.sin(angle_BxLx1xK2)
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BxLxHxK.dtype)


def causal_mask(seq_len: int) -> jax.Array:
  """(1, L, L): position i attends to positions 0..i."""
  return jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))[None]


def padding_mask(ids_BxS: jax.Array, pad_id: int) -> jax.Array:
  """(B, 1, S): every query may attend to the keys that are not padding."""
  return (ids_BxS != pad_id)[:, None, :]


# ---------------------------------------------------------------------------------------------
# Attention

# Masked logits get the most negative float rather than -inf, so a row with nothing to attend to
# (a padding query) gives a uniform average instead of NaN; exp() of it is exactly 0 otherwise.
_MASKED = float(jnp.finfo(jnp.float32).min)


def einsum_attention(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxLxS: jax.Array | None = None,
                     dropout: nn.Dropout | None = None, deterministic: bool = True,
                     dtype: str = 'float32') -> jax.Array:
  """Softmax attention written out: the reference the fused kernels are tested against, and on
  CPU the fastest of them. Batch and heads are folded into one leading axis N, which XLA's CPU
  matmuls batch over best. The two products take their operands in `dtype` (see matmul)."""
  batch, seq_len, n_heads, head_dim = q_BxLxHxK.shape
  fold = lambda t: t.transpose(0, 2, 1, 3).reshape(batch * n_heads, t.shape[1], head_dim)
  q_NxLxK, k_NxSxK, v_NxSxK = fold(q_BxLxHxK / math.sqrt(head_dim)), fold(k_BxSxHxK), fold(v_BxSxHxK)
  logits_NxLxS = matmul('nqk,nsk->nqs', q_NxLxK, k_NxSxK, dtype).astype(jnp.float32)
  if mask_BxLxS is not None and mask_BxLxS.shape[0] == 1:  # the same mask for every row
    logits_NxLxS = jnp.where(mask_BxLxS, logits_NxLxS, _MASKED)
  elif mask_BxLxS is not None:
    logits_BxHxLxS = logits_NxLxS.reshape(batch, n_heads, seq_len, -1)
    logits_NxLxS = jnp.where(mask_BxLxS[:, None], logits_BxHxLxS, _MASKED).reshape(logits_NxLxS.shape)
  probs_NxLxS = jax.nn.softmax(logits_NxLxS, axis=-1)
  if dropout is not None:
    probs_NxLxS = dropout(probs_NxLxS, deterministic=deterministic)
  out_NxLxK = matmul('nqs,nsk->nqk', probs_NxLxS, v_NxSxK, dtype)
  return out_NxLxK.reshape(batch, n_heads, seq_len, head_dim).transpose(0, 2, 1, 3)


def cached_attention(q_BxLxHxK, k_BxHxKxS, v_BxHxSxK, positions_BxL: jax.Array) -> jax.Array:
  """Attention of queries at positions_BxL over the cache slots at or before each query's position;
  the products take their operands in the cache's dtype (see matmul)."""
  dtype = k_BxHxKxS.dtype
  logits_BxHxLxS = matmul('blhk,bhks->bhls', q_BxLxHxK, k_BxHxKxS, dtype) / math.sqrt(
      q_BxLxHxK.shape[3])
  visible_Bx1xLxS = (jnp.arange(k_BxHxKxS.shape[3]) <= positions_BxL[:, :, None])[:, None]
  logits_BxHxLxS = jnp.where(visible_Bx1xLxS, logits_BxHxLxS.astype(jnp.float32), _MASKED)
  probs_BxHxLxS = jax.nn.softmax(logits_BxHxLxS, axis=-1)
  return matmul('bhls,bhsk->blhk', probs_BxHxLxS, v_BxHxSxK, dtype)


def attend(cfg: ModelConfig, q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxLxS: jax.Array | None,
           deterministic: bool, causal: bool = False) -> jax.Array:
  """Multi-head attention with the configured implementation; `causal` adds the causal mask."""
  if cfg.attention_impl == 'einsum':
    if causal:
      causal_1xLxL = causal_mask(q_BxLxHxK.shape[1])
      mask_BxLxS = causal_1xLxL if mask_BxLxS is None else mask_BxLxS & causal_1xLxL
    return einsum_attention(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxLxS,
                            nn.Dropout(cfg.attn_dropout), deterministic, cfg.dtype)
  return jax.nn.dot_product_attention(
      q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, is_causal=causal, implementation=cfg.attention_impl,
      mask=None if mask_BxLxS is None else mask_BxLxS[:, None])


class SelfAttention(nn.Module):
  """Queries, keys and values all from x, projected by one fused matrix (GPT-2's c_attn).

  Decoding (cache_positions_BxL given, causal only): row b's inputs sit at positions
  cache_positions_BxL[b]; they attend to the keys and values of earlier positions held in the
  'cache' collection, and write their own there.
  """
  config: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, deterministic: bool, mask_BxLxS: jax.Array | None = None,
               cache_positions_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    batch, seq_len, d_model = x_BxLxD.shape
    head_dim = d_model // cfg.n_heads
    # q, k, v in the compute dtype: the cache's, and what jax.nn.dot_product_attention takes.
    qkv_BxLx3D = dense(cfg, 3 * d_model, 'c_attn')(x_BxLxD).astype(cfg.dtype)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (
        t.reshape(batch, seq_len, cfg.n_heads, head_dim) for t in jnp.split(qkv_BxLx3D, 3, axis=-1))
    if cfg.pos_emb == 'rotary':
      positions_BxL = (jnp.arange(seq_len)[None] if cache_positions_BxL is None
                       else cache_positions_BxL)
      q_BxLxHxK, k_BxLxHxK = rotary(q_BxLxHxK, positions_BxL), rotary(k_BxLxHxK, positions_BxL)
    if cache_positions_BxL is not None:
      # Keys as (B, H, K, S), values as (B, H, S, K): XLA multiplies these without transposing them.
      start_B = cache_positions_BxL[:, 0]
      k_BxHxKxS = self._write_cache('k', k_BxLxHxK.transpose(0, 2, 3, 1), start_B, axis=3)
      v_BxHxSxK = self._write_cache('v', v_BxLxHxK.transpose(0, 2, 1, 3), start_B, axis=2)
      out_BxLxHxK = cached_attention(q_BxLxHxK, k_BxHxKxS, v_BxHxSxK, cache_positions_BxL)
    else:
      out_BxLxHxK = attend(cfg, q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxLxS, deterministic,
                           self.causal)
    out_BxLxD = out_BxLxHxK.reshape(batch, seq_len, d_model)
    return dense(cfg, d_model, 'c_proj', residual=True)(out_BxLxD)

  def _write_cache(self, name: str, new: jax.Array, start_B: jax.Array, axis: int) -> jax.Array:
    """The 'cache' variable `name`: new's shape with n_ctx positions along `axis`, where row b's
    new entries are written from position start_B[b] on."""
    n_ctx, n_new = self.config.n_ctx, new.shape[axis]
    cache = self.variable('cache', name, jnp.zeros, (*new.shape[:axis], n_ctx, *new.shape[axis + 1:]),
                          new.dtype)
    # Slot s of row b takes new entry s - start_B[b], where there is one: a select over the whole
    # cache, which XLA compiles in place, where a scatter with a start per row copies the cache.
    index_shape = [1] * new.ndim
    index_shape[0], index_shape[axis] = -1, n_ctx
    entry = (jnp.arange(n_ctx) - start_B[:, None]).reshape(index_shape)
    from_new = jnp.take_along_axis(new, jnp.clip(entry, 0, n_new - 1), axis=axis)
    cache.value = jnp.where((entry >= 0) & (entry < n_new), from_new, cache.value)
    return cache.value


class CrossAttention(nn.Module):
  """Queries from the decoder's x, keys and values from the encoder's output (memory).

  While decoding, the keys and values of the memory are projected once, at the first call, and
  kept in the 'cache' collection as 'kv'; later steps reuse them.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, memory_BxSxD: jax.Array, memory_mask_Bx1xS: jax.Array,
               deterministic: bool, decoding: bool = False) -> jax.Array:
    cfg = self.config
    batch, seq_len, d_model = x_BxLxD.shape
    head_dim = d_model // cfg.n_heads
    q_BxLxHxK = dense(cfg, d_model, 'c_q')(x_BxLxD).astype(cfg.dtype).reshape(
        batch, seq_len, cfg.n_heads, head_dim)
    project_kv = lambda m: dense(cfg, 2 * d_model, 'c_kv')(m).astype(cfg.dtype)
    if decoding:
      kv_BxSx2D = self.variable('cache', 'kv', lambda: project_kv(memory_BxSxD)).value
    else:
      kv_BxSx2D = project_kv(memory_BxSxD)
    k_BxSxHxK, v_BxSxHxK = (t.reshape(batch, -1, cfg.n_heads, head_dim)
                            for t in jnp.split(kv_BxSx2D, 2, axis=-1))
    out_BxLxHxK = attend(cfg, q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, memory_mask_Bx1xS, deterministic)
    return dense(cfg, d_model, 'c_proj', residual=True)(out_BxLxHxK.reshape(batch, seq_len, d_model))


# ---------------------------------------------------------------------------------------------
# Feed-forward, block, stack


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.config
    h_BxLxF = nn.gelu(dense(cfg, cfg.d_ff, 'c_fc')(x_BxLxD), approximate=True)
    return dense(cfg, cfg.d_model, 'c_proj', residual=True)(h_BxLxF)


class Block(nn.Module):
  """Self-attention, then (in a decoder of the encoder-decoder) cross-attention, then the MLP;
  each sublayer f wrapped as x + f(LN(x)) (pre-LN) or LN(x + f(x)) (post-LN)."""
  config: ModelConfig
  causal: bool = True
  cross: bool = False

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, deterministic: bool, mask_BxLxS: jax.Array | None = None,
               memory_BxSxD: jax.Array | None = None, memory_mask_Bx1xS: jax.Array | None = None,
               cache_positions_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    attn = SelfAttention(cfg, self.causal, name='attn')
    sublayers = [(layer_norm(cfg, 'ln_1'),
                  lambda h: attn(h, deterministic, mask_BxLxS, cache_positions_BxL))]
    if self.cross:
      cross_attn = CrossAttention(cfg, name='cross_attn')
      sublayers.append((layer_norm(cfg, 'ln_cross'), lambda h: cross_attn(
          h, memory_BxSxD, memory_mask_Bx1xS, deterministic, cache_positions_BxL is not None)))
    sublayers.append((layer_norm(cfg, 'ln_2'), MLP(cfg, name='mlp')))
    for norm, sublayer in sublayers:
      out_BxLxD = nn.Dropout(cfg.resid_dropout)(
          sublayer(norm(x_BxLxD) if cfg.norm == 'pre' else x_BxLxD), deterministic=deterministic)
      x_BxLxD = x_BxLxD + out_BxLxD if cfg.norm == 'pre' else norm(x_BxLxD + out_BxLxD)
    return x_BxLxD


REMAT_POLICIES = {'full': None, 'dots_saveable': jax.checkpoint_policies.dots_saveable}


def _block_class(cfg: ModelConfig) -> type[Block]:
  if cfg.remat == 'none':
    return Block
  # Argument 2, deterministic, is a Python bool and stays static.
  return nn.remat(Block, static_argnums=(2,), policy=REMAT_POLICIES[cfg.remat])


class _ScannedBlock(nn.Module):
  """A block in the (carry, output) form nn.scan wants; `deterministic` an attribute, so static."""
  config: ModelConfig
  causal: bool
  cross: bool
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, *args):
    block = _block_class(self.config)(self.config, self.causal, self.cross, name='block')
    return block(x_BxLxD, self.deterministic, *args), None


def stack_blocks(cfg: ModelConfig, n_layers: int, x_BxLxD: jax.Array, deterministic: bool, *,
                 name: str, causal: bool, cross: bool = False, mask_BxLxS: jax.Array | None = None,
                 memory_BxSxD: jax.Array | None = None, memory_mask_Bx1xS: jax.Array | None = None,
                 cache_positions_BxL: jax.Array | None = None) -> jax.Array:
  """n_layers blocks applied in turn, created in the calling module (call it from a compact
  method): named f'{name}_{i}', or, with cfg.scan_layers, one scanned block under `name`."""
  args = (mask_BxLxS, memory_BxSxD, memory_mask_Bx1xS, cache_positions_BxL)
  if cfg.scan_layers:
    layers = nn.scan(_ScannedBlock, variable_axes={'params': 0, 'cache': 0},
                     split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
                     length=n_layers)
    x_BxLxD, _ = layers(cfg, causal, cross, deterministic, name=name)(x_BxLxD, *args)
    return x_BxLxD
  for i in range(n_layers):
    x_BxLxD = _block_class(cfg)(cfg, causal, cross, name=f'{name}_{i}')(x_BxLxD, deterministic, *args)
  return x_BxLxD


# ---------------------------------------------------------------------------------------------
# Dense layers, LayerNorm and embeddings with the models' initialisation


def dense(cfg: ModelConfig, features: int, name: str, residual: bool = False,
          use_bias: bool = True) -> nn.Dense:
  # GPT-2 scales the init of projections that write into the residual stream by 1/sqrt(2 n_layers),
  # so the residual's variance does not grow with depth.
  std = cfg.init_std / math.sqrt(2 * cfg.n_layers) if residual else cfg.init_std
  return nn.Dense(features, use_bias=use_bias, kernel_init=nn.initializers.normal(std),
                  dtype=cfg.dtype, param_dtype=cfg.param_dtype, dot_general=_dense_dot_general,
                  name=name)


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=cfg.param_dtype,
                      name=name)


def token_embedding(cfg: ModelConfig, name: str = 'wte') -> nn.Embed:
  return nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(cfg.init_std),
                  dtype=jnp.float32, param_dtype=cfg.param_dtype, name=name)


def output_logits(cfg: ModelConfig, embedding: nn.Embed, x_BxLxD: jax.Array) -> jax.Array:
  """Logits (B, L, V), float32, of hidden states against a (tied) token embedding."""
  return matmul('bld,vd->blv', x_BxLxD, embedding.embedding, cfg.dtype).astype(jnp.float32)


def add_positions(module: nn.Module, cfg: ModelConfig, x_BxLxD: jax.Array, positions) -> jax.Array:
  """x plus the position signal of rows `positions` (a slice, or (B, L) indices): of a learned
  table, a parameter 'wpe' of `module` (the caller, inside its compact method), or of the fixed
  sinusoids. Rotary positions act in attention instead, so x is returned as it is."""
  if cfg.pos_emb == 'rotary':
    return x_BxLxD
  if cfg.pos_emb == 'learned':
    table = module.param('wpe', nn.initializers.normal(cfg.init_std), (cfg.n_ctx, cfg.d_model),
                         cfg.param_dtype)
  else:
    table = sinusoidal_positions(cfg.n_ctx, cfg.d_model)
  return x_BxLxD + table[positions].astype(jnp.float32)
