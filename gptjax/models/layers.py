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

gptjax/models/gpt.py, bert.py and encoder_decoder.py are short compositions of these. Shapes as in
gptjax/__init__.py: B batch, L query positions, S key positions, D model width, H heads, K head
width, F feed-forward width; N = B * H where heads are folded into the batch. Masks are booleans,
True where attention is allowed, of shape (B or 1, L, S).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.models import parametrization
from gptjax.models.config import ModelConfig
from gptjax.models.ops import dense_dot_general, matmul

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


def einsum_attention(
  q_BxLxHxK,
  k_BxSxHxK,
  v_BxSxHxK,
  mask_BxLxS: jax.Array | None = None,
  dropout: nn.Dropout | None = None,
  deterministic: bool = True,
  dtype: str = 'float32',
  temperature: float | None = None,
) -> jax.Array:
  """Softmax attention written out: the reference the fused kernels are tested against, and on
  CPU the fastest of them. Batch and heads are folded into one leading axis N, which XLA's CPU
  matmuls batch over best. The two products take their operands in `dtype` (see matmul). The
  attention logits are q . k / temperature, sqrt(K) unless given."""
  batch, seq_len, n_heads, head_dim = q_BxLxHxK.shape
  temperature = math.sqrt(head_dim) if temperature is None else temperature
  fold = lambda t: t.transpose(0, 2, 1, 3).reshape(batch * n_heads, t.shape[1], head_dim)
  q_NxLxK, k_NxSxK, v_NxSxK = (
    fold(q_BxLxHxK / temperature),
    fold(k_BxSxHxK),
    fold(v_BxSxHxK),
  )
  logits_NxLxS = matmul('nqk,nsk->nqs', q_NxLxK, k_NxSxK, dtype).astype(jnp.float32)
  if mask_BxLxS is not None and mask_BxLxS.shape[0] == 1:  # the same mask for every row
    logits_NxLxS = jnp.where(mask_BxLxS, logits_NxLxS, _MASKED)
  elif mask_BxLxS is not None:
    logits_BxHxLxS = logits_NxLxS.reshape(batch, n_heads, seq_len, -1)
    logits_NxLxS = jnp.where(mask_BxLxS[:, None], logits_BxHxLxS, _MASKED).reshape(
      logits_NxLxS.shape
    )
  probs_NxLxS = jax.nn.softmax(logits_NxLxS, axis=-1)
  if dropout is not None:
    probs_NxLxS = dropout(probs_NxLxS, deterministic=deterministic)
  out_NxLxK = matmul('nqs,nsk->nqk', probs_NxLxS, v_NxSxK, dtype)
  return out_NxLxK.reshape(batch, n_heads, seq_len, head_dim).transpose(0, 2, 1, 3)


def cached_attention(
  q_BxLxHxK, k_BxHxKxS, v_BxHxSxK, positions_BxL: jax.Array, temperature: float
) -> jax.Array:
  """Attention of queries at positions_BxL over the cache slots at or before each query's position,
  logits q . k / temperature; the products take their operands in the cache's dtype (see matmul)."""
  dtype = k_BxHxKxS.dtype
  logits_BxHxLxS = matmul('blhk,bhks->bhls', q_BxLxHxK, k_BxHxKxS, dtype) / temperature
  visible_Bx1xLxS = (jnp.arange(k_BxHxKxS.shape[3]) <= positions_BxL[:, :, None])[:, None]
  logits_BxHxLxS = jnp.where(visible_Bx1xLxS, logits_BxHxLxS.astype(jnp.float32), _MASKED)
  probs_BxHxLxS = jax.nn.softmax(logits_BxHxLxS, axis=-1)
  return matmul('bhls,bhsk->blhk', probs_BxHxLxS, v_BxHxSxK, dtype)


def attend(
  cfg: ModelConfig,
  q_BxLxHxK,
  k_BxSxHxK,
  v_BxSxHxK,
  mask_BxLxS: jax.Array | None,
  deterministic: bool,
  causal: bool = False,
) -> jax.Array:
  """Multi-head attention with the configured implementation; `causal` adds the causal mask."""
  temperature = parametrization.attention_temperature(cfg, q_BxLxHxK.shape[-1])
  if cfg.attention_impl == 'einsum':
    if causal:
      causal_1xLxL = causal_mask(q_BxLxHxK.shape[1])
      mask_BxLxS = causal_1xLxL if mask_BxLxS is None else mask_BxLxS & causal_1xLxL
    return einsum_attention(
      q_BxLxHxK,
      k_BxSxHxK,
      v_BxSxHxK,
      mask_BxLxS,
      nn.Dropout(cfg.attn_dropout),
      deterministic,
      cfg.dtype,
      temperature,
    )
  return jax.nn.dot_product_attention(
    q_BxLxHxK,
    k_BxSxHxK,
    v_BxSxHxK,
    is_causal=causal,
    scale=None if cfg.parametrization == 'sp' else 1.0 / temperature,
    implementation=cfg.attention_impl,
    mask=None if mask_BxLxS is None else mask_BxLxS[:, None],
  )


class SelfAttention(nn.Module):
  """Queries, keys and values all from x, projected by one fused matrix (GPT-2's c_attn).

  Decoding (cache_positions_BxL given, causal only): row b's inputs sit at positions
  cache_positions_BxL[b]; they attend to the keys and values of earlier positions held in the
  'cache' collection, and write their own there.
  """

  config: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(
    self,
    x_BxLxD: jax.Array,
    deterministic: bool,
    mask_BxLxS: jax.Array | None = None,
    cache_positions_BxL: jax.Array | None = None,
  ) -> jax.Array:
    cfg = self.config
    batch, seq_len, d_model = x_BxLxD.shape
    head_dim = d_model // cfg.n_heads
    # q, k, v in the compute dtype: the cache's, and what jax.nn.dot_product_attention takes.
    qkv_BxLx3D = dense(cfg, 3 * d_model, 'c_attn')(x_BxLxD).astype(cfg.dtype)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (
      t.reshape(batch, seq_len, cfg.n_heads, head_dim) for t in jnp.split(qkv_BxLx3D, 3, axis=-1)
    )
    if cfg.pos_emb == 'rotary':
      positions_BxL = (
        jnp.arange(seq_len)[None] if cache_positions_BxL is None else cache_positions_BxL
      )
      q_BxLxHxK, k_BxLxHxK = rotary(q_BxLxHxK, positions_BxL), rotary(k_BxLxHxK, positions_BxL)
    if cache_positions_BxL is not None:
      # Keys as (B, H, K, S), values as (B, H, S, K): XLA multiplies these without transposing them.
      start_B = cache_positions_BxL[:, 0]
      k_BxHxKxS = self._write_cache('k', k_BxLxHxK.transpose(0, 2, 3, 1), start_B, axis=3)
      v_BxHxSxK = self._write_cache('v', v_BxLxHxK.transpose(0, 2, 1, 3), start_B, axis=2)
      out_BxLxHxK = cached_attention(
        q_BxLxHxK,
        k_BxHxKxS,
        v_BxHxSxK,
        cache_positions_BxL,
        parametrization.attention_temperature(cfg, head_dim),
      )
    else:
      out_BxLxHxK = attend(
        cfg, q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxLxS, deterministic, self.causal
      )
    out_BxLxD = out_BxLxHxK.reshape(batch, seq_len, d_model)
    return dense(cfg, d_model, 'c_proj', residual=True)(out_BxLxD)

  def _write_cache(self, name: str, new: jax.Array, start_B: jax.Array, axis: int) -> jax.Array:
    """The 'cache' variable `name`: new's shape with n_ctx positions along `axis`, where row b's
    new entries are written from position start_B[b] on."""
    n_ctx, n_new = self.config.n_ctx, new.shape[axis]
    cache = self.variable(
      'cache', name, jnp.zeros, (*new.shape[:axis], n_ctx, *new.shape[axis + 1 :]), new.dtype
    )
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
  def __call__(
    self,
    x_BxLxD: jax.Array,
    memory_BxSxD: jax.Array,
    memory_mask_Bx1xS: jax.Array,
    deterministic: bool,
    decoding: bool = False,
  ) -> jax.Array:
    cfg = self.config
    batch, seq_len, d_model = x_BxLxD.shape
    head_dim = d_model // cfg.n_heads
    q_BxLxHxK = (
      dense(cfg, d_model, 'c_q')(x_BxLxD)
      .astype(cfg.dtype)
      .reshape(batch, seq_len, cfg.n_heads, head_dim)
    )
    project_kv = lambda m: dense(cfg, 2 * d_model, 'c_kv')(m).astype(cfg.dtype)
    if decoding:
      kv_BxSx2D = self.variable('cache', 'kv', lambda: project_kv(memory_BxSxD)).value
    else:
      kv_BxSx2D = project_kv(memory_BxSxD)
    k_BxSxHxK, v_BxSxHxK = (
      t.reshape(batch, -1, cfg.n_heads, head_dim) for t in jnp.split(kv_BxSx2D, 2, axis=-1)
    )
    out_BxLxHxK = attend(cfg, q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, memory_mask_Bx1xS, deterministic)
    return dense(cfg, d_model, 'c_proj', residual=True)(
      out_BxLxHxK.reshape(batch, seq_len, d_model)
    )


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
  each sublayer f wrapped as x + a f(LN(x)) (pre-LN) or LN(x + f(x)) (post-LN), where a is the
  depth parametrization's branch multiplier (1 but under CompleteP)."""

  config: ModelConfig
  causal: bool = True
  cross: bool = False
  branch_multiplier: float = 1.0

  @nn.compact
  def __call__(
    self,
    x_BxLxD: jax.Array,
    deterministic: bool,
    mask_BxLxS: jax.Array | None = None,
    memory_BxSxD: jax.Array | None = None,
    memory_mask_Bx1xS: jax.Array | None = None,
    cache_positions_BxL: jax.Array | None = None,
  ) -> jax.Array:
    cfg = self.config
    attn = SelfAttention(cfg, self.causal, name='attn')
    sublayers = [
      (layer_norm(cfg, 'ln_1'), lambda h: attn(h, deterministic, mask_BxLxS, cache_positions_BxL))
    ]
    if self.cross:
      cross_attn = CrossAttention(cfg, name='cross_attn')
      sublayers.append(
        (
          layer_norm(cfg, 'ln_cross'),
          lambda h: cross_attn(
            h, memory_BxSxD, memory_mask_Bx1xS, deterministic, cache_positions_BxL is not None
          ),
        )
      )
    sublayers.append((layer_norm(cfg, 'ln_2'), MLP(cfg, name='mlp')))
    for norm, sublayer in sublayers:
      out_BxLxD = nn.Dropout(cfg.resid_dropout)(
        sublayer(norm(x_BxLxD) if cfg.norm == 'pre' else x_BxLxD), deterministic=deterministic
      )
      if self.branch_multiplier != 1.0:
        out_BxLxD = out_BxLxD * self.branch_multiplier
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
  branch_multiplier: float
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, *args):
    block = _block_class(self.config)(
      self.config, self.causal, self.cross, self.branch_multiplier, name='block'
    )
    return block(x_BxLxD, self.deterministic, *args), None


def stack_blocks(
  cfg: ModelConfig,
  n_layers: int,
  x_BxLxD: jax.Array,
  deterministic: bool,
  *,
  name: str,
  causal: bool,
  cross: bool = False,
  mask_BxLxS: jax.Array | None = None,
  memory_BxSxD: jax.Array | None = None,
  memory_mask_Bx1xS: jax.Array | None = None,
  cache_positions_BxL: jax.Array | None = None,
) -> jax.Array:
  """n_layers blocks applied in turn, created in the calling module (call it from a compact
  method): named f'{name}_{i}', or, with cfg.scan_layers, one scanned block under `name`."""
  args = (mask_BxLxS, memory_BxSxD, memory_mask_Bx1xS, cache_positions_BxL)
  branch_multiplier = parametrization.branch_multiplier(cfg, n_layers)
  if cfg.scan_layers:
    layers = nn.scan(
      _ScannedBlock,
      variable_axes={'params': 0, 'cache': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=nn.broadcast,
      length=n_layers,
    )
    x_BxLxD, _ = layers(cfg, causal, cross, branch_multiplier, deterministic, name=name)(
      x_BxLxD, *args
    )
    return x_BxLxD
  for i in range(n_layers):
    x_BxLxD = _block_class(cfg)(cfg, causal, cross, branch_multiplier, name=f'{name}_{i}')(
      x_BxLxD, deterministic, *args
    )
  return x_BxLxD


# ---------------------------------------------------------------------------------------------
# Dense layers, LayerNorm and embeddings with the models' initialisation


def dense(
  cfg: ModelConfig, features: int, name: str, residual: bool = False, use_bias: bool = True
) -> nn.Dense:
  # GPT-2 scales the init of projections that write into the residual stream by 1/sqrt(2 n_layers),
  # so the residual's variance does not grow with depth (CompleteP: by its branch multiplier).
  layers = parametrization.residual_init_layers(cfg)
  std = cfg.init_std / math.sqrt(2 * layers) if residual else cfg.init_std
  return nn.Dense(
    features,
    use_bias=use_bias,
    kernel_init=nn.initializers.normal(std),
    dtype=cfg.dtype,
    param_dtype=cfg.param_dtype,
    dot_general=dense_dot_general,
    name=name,
  )


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=cfg.param_dtype, name=name
  )


def token_embedding(cfg: ModelConfig, name: str = 'wte') -> nn.Embed:
  return nn.Embed(
    cfg.vocab_size,
    cfg.d_model,
    embedding_init=nn.initializers.normal(cfg.init_std),
    dtype=jnp.float32,
    param_dtype=cfg.param_dtype,
    name=name,
  )


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
    table = module.param(
      'wpe', nn.initializers.normal(cfg.init_std), (cfg.n_ctx, cfg.d_model), cfg.param_dtype
    )
  else:
    table = sinusoidal_positions(cfg.n_ctx, cfg.d_model)
  return x_BxLxD + table[positions].astype(jnp.float32)
