"""A GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

Embeddings, a stack of causal self-attention blocks, and the logits; the parts are in
gptjax/models/layers.py. Shapes as in gptjax/__init__.py: B batch, L sequence, D model width,
V vocabulary.

Two variants share this code:
  - GPT-1 / original Transformer: post-LN blocks, x = LayerNorm(x + sublayer(x)), no final
    LayerNorm.
  - GPT-2: pre-LN blocks, x = x + sublayer(LayerNorm(x)), and a final LayerNorm before the logits.
Parameter names follow the GPT-2 checkpoints (wte, wpe, h_i/attn/c_attn, ...), which keeps weight
import a renaming exercise.

For fast sampling the model also decodes with a key/value cache (see GPT and
gptjax/decoding/sampling.py). It trains on (B, seq_len + 1) token windows (gptjax/data/windows.py)
with next_token_cross_entropy; ARCHITECTURE is its registry record.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gptjax.data import windows
from gptjax.data.tokenizers import Tokenizer
from gptjax.decoding import sampling
from gptjax.models.architecture import Architecture, check_documents_source, token_ids
from gptjax.models.config import ModelConfig
from gptjax.models.layers import (
  add_positions,
  dense,
  layer_norm,
  output_logits,
  stack_blocks,
  token_embedding,
)
from gptjax.models.losses import fused_cross_entropy
from gptjax.models.parametrization import readout


class GPT(nn.Module):
  """Token ids (B, L) -> next-token logits (B, L, V), float32.

  Decoding: with cache_start_B, row b's ids are the tokens at positions cache_start_B[b] + 0..L-1.
  They attend to the keys and values of earlier positions held in the 'cache' collection and write
  their own there; apply with mutable=['cache'] (a first call creates the cache).

  With return_hidden, also the final hidden states (B, L, D) the logits are read from (after the
  final LayerNorm in pre-LN, and muP's readout multiplier): the features task heads in
  fine-tuning build on.
  """

  config: ModelConfig

  @nn.compact
  def __call__(
    self,
    ids_BxL: jax.Array,
    deterministic: bool = True,
    cache_start_B: jax.Array | None = None,
    return_hidden: bool = False,
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    cfg = self.config
    seq_len = ids_BxL.shape[1]
    cache_positions_BxL = (
      None if cache_start_B is None else (cache_start_B[:, None] + jnp.arange(seq_len))
    )
    # Rows of the position table: the first seq_len, or each row's own when decoding.
    positions = slice(0, seq_len) if cache_positions_BxL is None else cache_positions_BxL
    wte = token_embedding(cfg)
    x_BxLxD = add_positions(self, cfg, wte(ids_BxL), positions)
    x_BxLxD = nn.Dropout(cfg.embd_dropout)(x_BxLxD, deterministic=deterministic)
    x_BxLxD = stack_blocks(
      cfg,
      cfg.n_layers,
      x_BxLxD,
      deterministic,
      name='h',
      causal=True,
      cache_positions_BxL=cache_positions_BxL,
    )
    if cfg.norm == 'pre':
      x_BxLxD = layer_norm(cfg, 'ln_f')(x_BxLxD)
    x_BxLxD = readout(cfg, x_BxLxD)
    if cfg.tie_embeddings:
      logits_BxLxV = output_logits(cfg, wte, x_BxLxD)
    else:
      logits_BxLxV = dense(cfg, cfg.vocab_size, 'lm_head', use_bias=False)(x_BxLxD)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    return (logits_BxLxV, x_BxLxD) if return_hidden else logits_BxLxV


def output_embedding(config: ModelConfig, params) -> jax.Array:
  """The (V, D) matrix the logits are hidden @ matrix.T of: the token embedding when tied."""
  if config.tie_embeddings:
    return params['wte']['embedding']
  return params['lm_head']['kernel'].T


def next_token_cross_entropy(
  model: GPT,
  params,
  batch_BxL1: jax.Array,
  deterministic: bool = True,
  rng: jax.Array | None = None,
) -> jax.Array:
  """Mean next-token loss (nats) of windows (B, L + 1): inputs are [:, :-1], targets [:, 1:]."""
  rngs = None if deterministic else {'dropout': rng}
  # The logits the model also returns are unused here, and jit drops their computation: the loss
  # fuses the output projection with the softmax (see gptjax/models/losses.py), multiplying in
  # the hidden states' dtype.
  _, hidden_BxLxD = model.apply(
    {'params': params},
    batch_BxL1[:, :-1],
    deterministic=deterministic,
    rngs=rngs,
    return_hidden=True,
  )
  hidden_BxLxD = hidden_BxLxD.astype(model.config.dtype)
  return fused_cross_entropy(
    hidden_BxLxD.reshape(-1, hidden_BxLxD.shape[-1]),
    output_embedding(model.config, params),
    batch_BxL1[:, 1:].reshape(-1),
  )


def _objective(model: GPT, config: ml_collections.ConfigDict, tokenizer: Tokenizer):
  del config, tokenizer  # the windows are all it needs

  def next_token(params, rows_BxL1, deterministic, rng):
    loss = next_token_cross_entropy(model, params, rows_BxL1, deterministic, rng)
    return loss, {'loss': loss}

  return next_token


def _sample(
  model: GPT, params, tokenizer: Tokenizer, data, config: ml_collections.ConfigDict
) -> str:
  """The continuation of sample.prompt."""
  del data
  sample = config.sample
  new_ids = sampling.generate(
    model,
    params,
    [tokenizer.bos_id, *tokenizer.encode(sample.prompt)],
    sample.max_new_tokens,
    jax.random.PRNGKey(config.seed),
    sample.temperature,
    sample.top_k,
    tokenizer.eos_id,
  )
  return sample.prompt + tokenizer.decode(new_ids)


ARCHITECTURE = Architecture(
  name='gpt',
  build=lambda config, pad_id: GPT(config),
  example_inputs=token_ids,
  row_width=windows.row_width,
  objective=_objective,
  load_data=windows.load,
  check_config=check_documents_source,
  eval_metrics=lambda means, data: {
    'eval_bpb': windows.bits_per_byte(means['loss'], data.val_bytes_per_token)
  },
  sample=_sample,
  language_model=True,
)
