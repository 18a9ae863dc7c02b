"""A GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

Read top to bottom: the configuration, attention, the MLP, one block, then the whole model.
Array names carry their shapes: B batch, L sequence, D model width, H heads, K head width,
F MLP width, V vocabulary.

Two variants share this code:
  - GPT-1 / original Transformer: post-LN blocks, x = LayerNorm(x + sublayer(x)), no final LayerNorm.
  - GPT-2: pre-LN blocks, x = x + sublayer(LayerNorm(x)), and a final LayerNorm before the logits.
Parameter names follow the GPT-2 checkpoints (wte, wpe, h_i/attn/c_attn, ...), which keeps weight
import a renaming exercise.

For fast sampling the model also decodes with a key/value cache (see GPT and gptjax/sampling.py):
S below is the cache length, n_ctx.
"""
import dataclasses
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  n_ctx: int  # maximum sequence length (context window)
  n_layers: int
  n_heads: int
  d_model: int
  d_ff: int  # MLP hidden width, 4 * d_model in GPT-1/2
  norm: Literal['pre', 'post'] = 'pre'  # 'pre' = GPT-2, 'post' = GPT-1 / original Transformer
  pos_emb: Literal['learned', 'sinusoidal'] = 'learned'
  tie_embeddings: bool = True  # output projection = token embedding transposed
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
  # leading axis, under params['h']['block']): compile time stops growing with depth.
  scan_layers: bool = False
  dtype: str = 'float32'  # compute dtype ('bfloat16' on GPU/TPU)
  param_dtype: str = 'float32'


def sinusoidal_positions(n_ctx: int, d_model: int) -> jax.Array:
  """The fixed encoding of "Attention Is All You Need": sin on even, cos on odd channels."""
  position_Lx1 = jnp.arange(n_ctx, dtype=jnp.float32)[:, None]
  inv_freq_D2 = jnp.exp(-math.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
  angle_LxD2 = position_Lx1 * inv_freq_D2
  return jnp.stack([jnp.sin(angle_LxD2), jnp.cos(angle_LxD2)], axis=-1).reshape(n_ctx, d_model)


def einsum_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, dropout: nn.Dropout | None = None,
                     deterministic: bool = True) -> jax.Array:
  """Causal softmax attention written out: the reference the fused kernels are tested against, and
  on CPU the fastest of them. Batch and heads are folded into one leading axis N, which XLA's
  CPU matmuls batch over best."""
  batch, seq_len, n_heads, head_dim = q_BxLxHxK.shape
  fold = lambda t: t.transpose(0, 2, 1, 3).reshape(batch * n_heads, seq_len, head_dim)
  q_NxLxK, k_NxLxK, v_NxLxK = fold(q_BxLxHxK / math.sqrt(head_dim)), fold(k_BxLxHxK), fold(v_BxLxHxK)
  logits_NxLxL = jnp.einsum('nqk,nsk->nqs', q_NxLxK, k_NxLxK)
  causal_LxL = jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))
  logits_NxLxL = jnp.where(causal_LxL, logits_NxLxL.astype(jnp.float32), -jnp.inf)
  probs_NxLxL = jax.nn.softmax(logits_NxLxL, axis=-1).astype(v_BxLxHxK.dtype)
  if dropout is not None:
    probs_NxLxL = dropout(probs_NxLxL, deterministic=deterministic)
  out_NxLxK = jnp.einsum('nqs,nsk->nqk', probs_NxLxL, v_NxLxK)
  return out_NxLxK.reshape(batch, n_heads, seq_len, head_dim).transpose(0, 2, 1, 3)


def cached_attention(q_BxLxHxK, k_BxHxKxS, v_BxHxSxK, positions_BxL: jax.Array) -> jax.Array:
  """Attention of queries at positions_BxL over the cache slots at or before each query's position."""
  logits_BxHxLxS = jnp.einsum('blhk,bhks->bhls', q_BxLxHxK, k_BxHxKxS) / math.sqrt(q_BxLxHxK.shape[3])
  visible_Bx1xLxS = (jnp.arange(k_BxHxKxS.shape[3]) <= positions_BxL[:, :, None])[:, None]
  logits_BxHxLxS = jnp.where(visible_Bx1xLxS, logits_BxHxLxS.astype(jnp.float32), -jnp.inf)
  probs_BxHxLxS = jax.nn.softmax(logits_BxHxLxS, axis=-1).astype(v_BxHxSxK.dtype)
  return jnp.einsum('bhls,bhsk->blhk', probs_BxHxLxS, v_BxHxSxK)


class CausalSelfAttention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, deterministic: bool,
               cache_positions_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    batch, seq_len, d_model = x_BxLxD.shape
    head_dim = d_model // cfg.n_heads
    qkv_BxLx3D = _dense(cfg, 3 * d_model, 'c_attn')(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (
        t.reshape(batch, seq_len, cfg.n_heads, head_dim) for t in jnp.split(qkv_BxLx3D, 3, axis=-1))
    if cache_positions_BxL is not None:
      # Keys as (B, H, K, S), values as (B, H, S, K): XLA multiplies these without transposing them.
      start_B = cache_positions_BxL[:, 0]
      k_BxHxKxS = self._write_cache('k', k_BxLxHxK.transpose(0, 2, 3, 1), start_B, axis=3)
      v_BxHxSxK = self._write_cache('v', v_BxLxHxK.transpose(0, 2, 1, 3), start_B, axis=2)
      out_BxLxHxK = cached_attention(q_BxLxHxK, k_BxHxKxS, v_BxHxSxK, cache_positions_BxL)
    elif cfg.attention_impl == 'einsum':
      out_BxLxHxK = einsum_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK,
                                     nn.Dropout(cfg.attn_dropout), deterministic)
    else:
      out_BxLxHxK = jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True,
                                                 implementation=cfg.attention_impl)
    out_BxLxD = out_BxLxHxK.reshape(batch, seq_len, d_model)
    return _dense(cfg, d_model, 'c_proj', residual=True)(out_BxLxD)

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


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.config
    h_BxLxF = nn.gelu(_dense(cfg, cfg.d_ff, 'c_fc')(x_BxLxD), approximate=True)
    return _dense(cfg, cfg.d_model, 'c_proj', residual=True)(h_BxLxF)


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, deterministic: bool,
               cache_positions_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    ln_1, ln_2 = _layer_norm(cfg, 'ln_1'), _layer_norm(cfg, 'ln_2')
    attn = CausalSelfAttention(cfg, name='attn')
    mlp = MLP(cfg, name='mlp')
    drop = lambda y: nn.Dropout(cfg.resid_dropout)(y, deterministic=deterministic)
    if cfg.norm == 'pre':
      x_BxLxD = x_BxLxD + drop(attn(ln_1(x_BxLxD), deterministic, cache_positions_BxL))
      return x_BxLxD + drop(mlp(ln_2(x_BxLxD)))
    x_BxLxD = ln_1(x_BxLxD + drop(attn(x_BxLxD, deterministic, cache_positions_BxL)))
    return ln_2(x_BxLxD + drop(mlp(x_BxLxD)))


class GPT(nn.Module):
  """Token ids (B, L) -> next-token logits (B, L, V), float32.

  Decoding: with cache_start_B, row b's ids are the tokens at positions cache_start_B[b] + 0..L-1.
  They attend to the keys and values of earlier positions held in the 'cache' collection and write
  their own there; apply with mutable=['cache'] (a first call creates the cache).

  With return_hidden, also the final hidden states (B, L, D) the logits are read from (after the
  final LayerNorm in pre-LN): the features task heads in fine-tuning build on.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, ids_BxL: jax.Array, deterministic: bool = True,
               cache_start_B: jax.Array | None = None,
               return_hidden: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    cfg = self.config
    seq_len = ids_BxL.shape[1]
    cache_positions_BxL = None if cache_start_B is None else (
        cache_start_B[:, None] + jnp.arange(seq_len))
    # Rows of the position table: the first seq_len, or each row's own when decoding.
    positions = slice(0, seq_len) if cache_positions_BxL is None else cache_positions_BxL
    wte = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(cfg.init_std),
                   dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='wte')
    x_BxLxD = wte(ids_BxL)
    if cfg.pos_emb == 'learned':
      wpe = self.param('wpe', nn.initializers.normal(cfg.init_std), (cfg.n_ctx, cfg.d_model),
                       cfg.param_dtype)
      x_BxLxD = x_BxLxD + wpe[positions].astype(cfg.dtype)
    else:
      x_BxLxD = x_BxLxD + sinusoidal_positions(cfg.n_ctx, cfg.d_model)[positions].astype(cfg.dtype)
    x_BxLxD = nn.Dropout(cfg.embd_dropout)(x_BxLxD, deterministic=deterministic)
    if cfg.scan_layers:
      layers = nn.scan(_ScannedBlock, variable_axes={'params': 0, 'cache': 0},
                       split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
                       length=cfg.n_layers)
      x_BxLxD, _ = layers(cfg, deterministic, name='h')(x_BxLxD, cache_positions_BxL)
    else:
      for i in range(cfg.n_layers):
        x_BxLxD = _block_class(cfg)(cfg, name=f'h_{i}')(x_BxLxD, deterministic, cache_positions_BxL)
    if cfg.norm == 'pre':
      x_BxLxD = _layer_norm(cfg, 'ln_f')(x_BxLxD)
    if cfg.tie_embeddings:
      logits_BxLxV = wte.attend(x_BxLxD)
    else:
      logits_BxLxV = _dense(cfg, cfg.vocab_size, 'lm_head', use_bias=False)(x_BxLxD)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    return (logits_BxLxV, x_BxLxD) if return_hidden else logits_BxLxV


REMAT_POLICIES = {'full': None, 'dots_saveable': jax.checkpoint_policies.dots_saveable}


def _block_class(cfg: ModelConfig) -> type[Block]:
  if cfg.remat == 'none':
    return Block
  # Argument 2, deterministic, is a Python bool and stays static.
  return nn.remat(Block, static_argnums=(2,), policy=REMAT_POLICIES[cfg.remat])


class _ScannedBlock(nn.Module):
  """A block in the (carry, output) form nn.scan wants; `deterministic` an attribute, so static."""
  config: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, cache_positions_BxL: jax.Array | None):
    block = _block_class(self.config)(self.config, name='block')
    return block(x_BxLxD, self.deterministic, cache_positions_BxL), None


def output_embedding(config: ModelConfig, params) -> jax.Array:
  """The (V, D) matrix the logits are hidden @ matrix.T of: the token embedding when tied."""
  if config.tie_embeddings:
    return params['wte']['embedding']
  return params['lm_head']['kernel'].T


def _dense(cfg: ModelConfig, features: int, name: str, residual: bool = False,
           use_bias: bool = True) -> nn.Dense:
  # GPT-2 scales the init of projections that write into the residual stream by 1/sqrt(2 n_layers),
  # so the residual's variance does not grow with depth.
  std = cfg.init_std / math.sqrt(2 * cfg.n_layers) if residual else cfg.init_std
  return nn.Dense(features, use_bias=use_bias, kernel_init=nn.initializers.normal(std),
                  dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


def _layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      name=name)
