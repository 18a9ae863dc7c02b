"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017).

  source ids (B, S) -> embedding * sqrt(D) + positions -> encoder: n_encoder_layers blocks of
      bidirectional self-attention (source padding masked out) and MLP     -> memory (B, S, D)
  target ids (B, T) -> embedding * sqrt(D) + positions -> decoder: n_layers blocks of causal
      self-attention, cross-attention to the memory, and MLP                -> logits (B, T, V)

The parts are those of gptjax/models/layers.py; the decoder is GPT's stack with a cross-attention
sublayer in each block. Post-LN blocks by default, as in the paper (config.norm); with pre-LN each
stack ends in a LayerNorm of its own. Positions follow config.pos_emb (the paper's sinusoids, a
learned table per stack, or rotary).

Source and target share one vocabulary. With tie_embeddings (paper section 3.4) one matrix 'wte'
embeds the source, embeds the target and, transposed, projects to the logits; otherwise the source
and target have embeddings of their own ('wte_source', 'wte_target') and the logits come from a
Dense 'lm_head'. Either way embeddings are multiplied by sqrt(d_model), as in the paper. They keep
the codebase's normal(init_std) initialisation: at init_std 0.02 and d_model 512 the scaled
embeddings (std 0.45) are on the scale of the sinusoids (amplitude 1); a tiny model trains faster
with a larger init_std, which keeps its token embeddings from being drowned by the positions.
Parameters: {wte | wte_source, wte_target, lm_head}, encoder/{wpe, h_i, ln_f},
decoder/{wpe, h_i, ln_f} (wpe for learned positions, ln_f for pre-LN; with config.scan_layers the
blocks are one scanned 'h').

encode, decode and __call__ are all entry points of model.apply (method='encode' / 'decode'). For
generation (gptjax/decoding/seq2seq.py) the source is encoded once and decode runs with
cache_start_B, like GPT: the decoder's self-attention keys and values accumulate in the 'cache'
collection, and each cross-attention projects the memory's keys and values once, at the first
cached call, into the cache as 'kv'.

loss_and_metrics is the training objective on the rows of gptjax/data/pairs.py: label-smoothed
cross-entropy of the target tokens given the source and the tokens before them. ARCHITECTURE is
its registry record; its own settings are the config section encoder_decoder.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gptjax.data import pairs
from gptjax.data.tokenizers import Tokenizer
from gptjax.decoding import seq2seq
from gptjax.errors import UserError
from gptjax.fields import COUNT, NATURAL, Field
from gptjax.models import parametrization
from gptjax.models.architecture import Architecture
from gptjax.models.config import ModelConfig
from gptjax.models.layers import (
  add_positions,
  dense,
  layer_norm,
  output_logits,
  padding_mask,
  stack_blocks,
  token_embedding,
)
from gptjax.models.losses import label_smoothed_cross_entropy, masked_mean
from gptjax.models.parametrization import readout


class Stack(nn.Module):
  """The encoder (decoder=False) or the decoder: embedded tokens (B, L, D) -> hidden states.

  Adds the positions, applies embedding dropout, then the blocks, then (pre-LN) the final
  LayerNorm. The decoder's blocks are causal and cross-attend to memory_BxSxD; with
  cache_positions_BxL they decode with the cache (see layers.SelfAttention).
  """

  config: ModelConfig
  n_layers: int
  decoder: bool

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
    positions = slice(0, x_BxLxD.shape[1]) if cache_positions_BxL is None else cache_positions_BxL
    x_BxLxD = add_positions(self, cfg, x_BxLxD, positions)
    x_BxLxD = nn.Dropout(cfg.embd_dropout)(x_BxLxD, deterministic=deterministic)
    x_BxLxD = stack_blocks(
      cfg,
      self.n_layers,
      x_BxLxD,
      deterministic,
      name='h',
      causal=self.decoder,
      cross=self.decoder,
      mask_BxLxS=mask_BxLxS,
      memory_BxSxD=memory_BxSxD,
      memory_mask_Bx1xS=memory_mask_Bx1xS,
      cache_positions_BxL=cache_positions_BxL,
    )
    if cfg.norm == 'pre':
      x_BxLxD = layer_norm(cfg, 'ln_f')(x_BxLxD)
    return x_BxLxD


class EncoderDecoder(nn.Module):
  """(source ids (B, S), decoder input ids (B, T)) -> next-token logits (B, T, V), float32.

  Source positions holding pad_id are invisible to the encoder's and the decoder's attention.
  """

  config: ModelConfig
  pad_id: int = 0

  def setup(self):
    cfg = self.config
    if cfg.tie_embeddings:
      self.wte = token_embedding(cfg, 'wte')
    else:
      self.wte_source = token_embedding(cfg, 'wte_source')
      self.wte_target = token_embedding(cfg, 'wte_target')
      self.lm_head = dense(cfg, cfg.vocab_size, 'lm_head', use_bias=False)
    self.encoder = Stack(cfg, cfg.n_encoder_layers, decoder=False)
    self.decoder = Stack(cfg, cfg.n_layers, decoder=True)

  def _embed(self, embedding: nn.Embed, ids_BxL: jax.Array) -> jax.Array:
    # Section 3.4: the embedding is scaled up by sqrt(d_model); the same (tied) matrix read as the
    # output projection is not, so the table can stay at the small scale the logits want.
    return embedding(ids_BxL) * parametrization.embedding_scale(self.config)

  def encode(self, source_BxS: jax.Array, deterministic: bool = True) -> jax.Array:
    """The memory (B, S, D): every source position attends to every non-padding one."""
    embedding = self.wte if self.config.tie_embeddings else self.wte_source
    return self.encoder(
      self._embed(embedding, source_BxS),
      deterministic,
      mask_BxLxS=padding_mask(source_BxS, self.pad_id),
    )

  def decode(
    self,
    target_in_BxT: jax.Array,
    memory_BxSxD: jax.Array,
    memory_mask_Bx1xS: jax.Array,
    deterministic: bool = True,
    cache_start_B: jax.Array | None = None,
  ) -> jax.Array:
    """Logits (B, T, V), float32, of the token after each of target_in_BxT's.

    With cache_start_B, row b's ids are the tokens at positions cache_start_B[b] + 0..T-1; they
    attend to the earlier positions' keys and values in the 'cache' collection and write their
    own there (apply with mutable=['cache']; the first call creates the cache, and with it the
    memory's projected keys and values, which later calls reuse instead of memory_BxSxD).
    """
    cfg = self.config
    cache_positions_BxT = (
      None
      if cache_start_B is None
      else (cache_start_B[:, None] + jnp.arange(target_in_BxT.shape[1]))
    )
    embedding = self.wte if cfg.tie_embeddings else self.wte_target
    x_BxTxD = self.decoder(
      self._embed(embedding, target_in_BxT),
      deterministic,
      memory_BxSxD=memory_BxSxD,
      memory_mask_Bx1xS=memory_mask_Bx1xS,
      cache_positions_BxL=cache_positions_BxT,
    )
    x_BxTxD = readout(cfg, x_BxTxD)
    logits_BxTxV = (
      output_logits(cfg, self.wte, x_BxTxD) if cfg.tie_embeddings else self.lm_head(x_BxTxD)
    )
    return logits_BxTxV.astype(jnp.float32)

  def __call__(
    self, source_BxS: jax.Array, target_in_BxT: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    memory_BxSxD = self.encode(source_BxS, deterministic)
    return self.decode(
      target_in_BxT, memory_BxSxD, padding_mask(source_BxS, self.pad_id), deterministic
    )


def loss_and_metrics(
  model: EncoderDecoder,
  params,
  batch_BxW: jax.Array,
  *,
  source_len: int,
  pad_id: int,
  label_smoothing: float,
  deterministic: bool = True,
  rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(objective, {'loss', 'accuracy'}) of a batch of pair rows (gptjax/data/pairs.py's layout).

  Columns [0, source_len) are the source; the rest, [BOS, target, EOS, pad...], give the decoder
  input (all but the last) and the labels (all but BOS). Labels equal to pad_id count for nothing.
  The objective is the cross-entropy against the label smoothed as in the paper: 1 - eps on the
  label plus eps spread uniformly over the vocabulary, averaged over the labelled tokens.
  'loss' is the plain cross-entropy (nats per target token) and 'accuracy' the share of labels
  that are the argmax. With deterministic=False, dropout draws from rng.
  """
  if pad_id != model.pad_id:
    raise ValueError(f"pad_id {pad_id} differs from the model's source pad_id {model.pad_id}")
  source_BxS, target_BxU = batch_BxW[:, :source_len], batch_BxW[:, source_len:]
  target_in_BxT, labels_BxT = target_BxU[:, :-1], target_BxU[:, 1:]
  logits_BxTxV = model.apply(
    {'params': params},
    source_BxS,
    target_in_BxT,
    deterministic,
    rngs=None if deterministic else {'dropout': rng},
  )
  smoothed_BxT, nll_BxT = label_smoothed_cross_entropy(logits_BxTxV, labels_BxT, label_smoothing)
  labelled_BxT = labels_BxT != pad_id
  correct_BxT = jnp.argmax(logits_BxTxV, axis=-1) == labels_BxT
  return masked_mean(smoothed_BxT, labelled_BxT), {
    'loss': masked_mean(nll_BxT, labelled_BxT),
    'accuracy': masked_mean(correct_BxT, labelled_BxT),
  }


def _objective(model: EncoderDecoder, config: ml_collections.ConfigDict, tokenizer: Tokenizer):
  return lambda params, rows, deterministic, rng: loss_and_metrics(
    model,
    params,
    rows,
    source_len=config.encoder_decoder.source_len,
    pad_id=tokenizer.pad_id,
    label_smoothing=config.encoder_decoder.label_smoothing,
    deterministic=deterministic,
    rng=rng,
  )


def _check_config(config: ml_collections.ConfigDict) -> None:
  model, section, source = config.model, config.encoder_decoder, config.data.source
  if section.n_encoder_layers < 1:
    raise UserError(
      'model.architecture=encoder_decoder needs encoder_decoder.n_encoder_layers >= 1'
    )
  if source not in pairs.SOURCES:
    raise UserError(
      f'model.architecture=encoder_decoder trains on (source, target) pairs: '
      f'data.source={source!r}; use one of {", ".join(pairs.SOURCES)}'
    )
  if section.source_len > model.n_ctx:
    raise UserError(
      f'encoder_decoder.source_len={section.source_len} is longer than model.n_ctx={model.n_ctx}'
    )
  if config.tokenizer.kind == 'gpt2':
    raise UserError(
      "tokenizer.kind='gpt2' pads with its end-of-text token, which would hide "
      "the targets' EOS from the loss; use sentencepiece, byte or char"
    )
  if source == 'pairs_jsonl' and not config.data.pairs_files:
    raise UserError("data.source='pairs_jsonl' needs data.pairs_files (a glob of JSONL files)")


def _sample(
  model: EncoderDecoder, params, tokenizer: Tokenizer, data, config: ml_collections.ConfigDict
) -> str:
  """The greedy output for the first validation source, beside the source and the reference."""
  source_1xS, target_1xT1 = pairs.split_row(np.asarray(data.val[:1]), data.source_len)
  output_1xT = seq2seq.greedy(
    model,
    params,
    jnp.asarray(source_1xS),
    config.sample.max_new_tokens,
    tokenizer.bos_id,
    tokenizer.eos_id,
    tokenizer.pad_id,
  )
  return '\n'.join(
    f'{name}: {tokenizer.decode(ids[0])}'
    for name, ids in (
      ('source', source_1xS),
      ('reference', target_1xT1),
      ('model (greedy)', output_1xT),
    )
  )


ARCHITECTURE = Architecture(
  name='encoder_decoder',
  build=lambda config, pad_id: EncoderDecoder(config, pad_id=pad_id),
  example_inputs=lambda config: (jnp.zeros((1, config.n_ctx), jnp.int32),) * 2,
  row_width=lambda config: sum(pairs.lengths(config)) + 1,
  objective=_objective,
  load_data=pairs.load_tokenizer_and_pairs,
  check_config=_check_config,
  config_fields={
    'encoder_decoder.n_encoder_layers': NATURAL,
    'encoder_decoder.source_len': COUNT,  # the pair cache's rows depend on it
    'encoder_decoder.label_smoothing': Field(float, low=0, below=1, resumable=True),
  },
  model_fields=lambda config: {'n_encoder_layers': config.encoder_decoder.n_encoder_layers},
  sample=_sample,
)
