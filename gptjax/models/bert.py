"""BERT: a bidirectional Transformer encoder pre-trained as a masked language model (Devlin et
al. 2019).

Read top to bottom:
  specials          [CLS], [SEP] and [PAD] are the tokenizer's START, DELIM and PAD; [MASK] is one
                    new id appended after the tokenizer's vocabulary (mlm_vocab_size, mask_id)
  mlm_inputs        the (B, L + 1) corpus windows a GPT trains on -> [CLS] ... [SEP]
  mask_tokens       BERT's corruption: choose 15% of the positions; of those, 80% -> [MASK],
                    10% -> a random token, 10% kept
  BERT              token + position + segment embeddings -> LayerNorm -> dropout -> bidirectional
                    blocks (gptjax/models/layers.py) -> the MLM head: Dense -> GELU -> LayerNorm
                    -> logits through the token embedding (tied) plus a bias per vocabulary entry
  loss_and_metrics  cross-entropy and accuracy over the chosen positions only
  ARCHITECTURE      its registry record: trained on the LM windows
  BertClassifier    a classifier of its own: pooler (Dense + tanh on [CLS]) -> dropout -> class
                    logits. python -m gptjax.finetune does not use it: it reads BERT's final
                    hidden state at [CLS] itself (gptjax/downstream/backbones.py), with segment
                    ids through wse and one head for every kind of task

The reference BERT is post-LN (config.norm='post') with learned positions and layer_norm_eps 1e-12;
with norm='pre' a final LayerNorm follows the blocks, as in GPT-2. The pooler lives in
BertClassifier, not in BERT: without next-sentence prediction the pre-training objective never
trains it, so the pre-trained model has no parameters its loss does not use.
Shapes as in gptjax/__init__.py: B batch, L sequence, D model width, V vocabulary; classes is
BertClassifier's number of classes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gptjax.data import windows
from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.fields import COUNT, Field
from gptjax.models.architecture import Architecture, check_documents_source, token_ids
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
from gptjax.models.losses import masked_mean, token_cross_entropy
from gptjax.models.parametrization import readout

# ---------------------------------------------------------------------------------------------
# Specials and inputs


def mlm_vocab_size(tokenizer_vocab_size: int) -> int:
  """The model's vocabulary: the tokenizer's plus [MASK]."""
  return tokenizer_vocab_size + 1


def mask_id(model_vocab_size: int) -> int:
  """[MASK]: the last id of the model's vocabulary, one no tokenizer produces."""
  return model_vocab_size - 1


def mlm_inputs(windows_BxL1: jax.Array, cls_id: int, sep_id: int) -> jax.Array:
  """[CLS] w_0 .. w_{L-3} [SEP], (B, L), from windows (B, L + 1).

  The windows carry one token more than a GPT reads (its shifted targets); an MLM predicts in place,
  so the first L - 2 tokens of each window are kept and the last three dropped.
  """
  batch, seq_len = windows_BxL1.shape[0], windows_BxL1.shape[1] - 1
  cls_Bx1 = jnp.full((batch, 1), cls_id, windows_BxL1.dtype)
  sep_Bx1 = jnp.full((batch, 1), sep_id, windows_BxL1.dtype)
  return jnp.concatenate([cls_Bx1, windows_BxL1[:, : seq_len - 2], sep_Bx1], axis=1)


def mask_tokens(
  ids_BxL: jax.Array,
  rng: jax.Array,
  *,
  mask_id: int,
  vocab_size: int,
  special_ids: tuple[int, ...],
  probability: float = 0.15,
) -> tuple[jax.Array, jax.Array]:
  """(corrupted ids, selected) with BERT's corruption; a pure function of rng.

  Each position that is not one of special_ids is selected independently with `probability` (so a
  row's count varies, as in Hugging Face's collator, rather than exactly round(p * n) per row as in
  the original data generator). A selected position becomes mask_id with probability 0.8, a token
  drawn uniformly from [0, vocab_size) (the tokenizer's ids, [MASK] excluded) with probability 0.1,
  and stays as it is otherwise; the model is asked for the original token at all of them.
  """
  select_rng, token_rng = jax.random.split(rng)
  # One uniform u per position decides both: selected when u < p, and then u / p is uniform on
  # [0, 1) again and picks the action (each random draw costs XLA a threefry hash to compile).
  u_BxL = jax.random.uniform(select_rng, ids_BxL.shape)
  eligible_BxL = ~jnp.isin(ids_BxL, jnp.asarray(special_ids, ids_BxL.dtype))
  selected_BxL = eligible_BxL & (u_BxL < probability)
  action_BxL = u_BxL / probability
  # Random bits modulo vocab_size: uniform up to a relative bias below vocab_size / 2^32.
  random_BxL = (jax.random.bits(token_rng, ids_BxL.shape) % vocab_size).astype(ids_BxL.dtype)
  corrupted_BxL = jnp.where(
    action_BxL < 0.8, mask_id, jnp.where(action_BxL < 0.9, random_BxL, ids_BxL)
  )
  return jnp.where(selected_BxL, corrupted_BxL, ids_BxL), selected_BxL


# ---------------------------------------------------------------------------------------------
# The model


class BERT(nn.Module):
  """Token ids (B, L) -> masked-LM logits (B, L, V), float32.

  segments_BxL: the segment ('token type', sentence A / B) of each token, 0 when not given.
  mask_Bx1xL: which keys every query may attend to (layers.padding_mask of the ids); None when
  there is no padding, as in pre-training windows.
  With return_hidden, also the encoder's final hidden states (B, L, D), the input of the MLM head
  and of BertClassifier.

  Parameters: wte, wpe (learned positions), wse (segments), ln_embd, the blocks h_i (or h when
  scanned), ln_f (pre-LN only), and the head's mlm_dense, mlm_ln and mlm_bias (lm_head untied).
  """

  config: ModelConfig

  @nn.compact
  def __call__(
    self,
    ids_BxL: jax.Array,
    segments_BxL: jax.Array | None = None,
    deterministic: bool = True,
    return_hidden: bool = False,
    mask_Bx1xL: jax.Array | None = None,
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    cfg = self.config
    if segments_BxL is None:
      segments_BxL = jnp.zeros_like(ids_BxL)
    wte = token_embedding(cfg)
    wse = nn.Embed(
      cfg.type_vocab_size,
      cfg.d_model,
      name='wse',
      dtype=jnp.float32,
      embedding_init=nn.initializers.normal(cfg.init_std),
      param_dtype=cfg.param_dtype,
    )
    x_BxLxD = add_positions(self, cfg, wte(ids_BxL) + wse(segments_BxL), slice(0, ids_BxL.shape[1]))
    x_BxLxD = layer_norm(cfg, 'ln_embd')(x_BxLxD)
    x_BxLxD = nn.Dropout(cfg.embd_dropout)(x_BxLxD, deterministic=deterministic)
    x_BxLxD = stack_blocks(
      cfg, cfg.n_layers, x_BxLxD, deterministic, name='h', causal=False, mask_BxLxS=mask_Bx1xL
    )
    if cfg.norm == 'pre':
      x_BxLxD = layer_norm(cfg, 'ln_f')(x_BxLxD)

    # The MLM head: a transform of its own, so the blocks' last output is not forced to live in
    # the embedding space, then the (tied) output projection with a bias per vocabulary entry.
    # GELU in its tanh form, as in the original BERT code and the blocks' MLP.
    h_BxLxD = nn.gelu(dense(cfg, cfg.d_model, 'mlm_dense')(x_BxLxD), approximate=True)
    h_BxLxD = readout(cfg, layer_norm(cfg, 'mlm_ln')(h_BxLxD))
    if cfg.tie_embeddings:
      bias_V = self.param('mlm_bias', nn.initializers.zeros, (cfg.vocab_size,), cfg.param_dtype)
      logits_BxLxV = output_logits(cfg, wte, h_BxLxD) + bias_V
    else:
      logits_BxLxV = dense(cfg, cfg.vocab_size, 'lm_head')(h_BxLxD)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    return (logits_BxLxV, x_BxLxD) if return_hidden else logits_BxLxV


# ---------------------------------------------------------------------------------------------
# Pre-training objective


def loss_and_metrics(
  model: BERT,
  params,
  windows_BxL1: jax.Array,
  rng: jax.Array,
  *,
  cls_id: int,
  sep_id: int,
  pad_id: int,
  mlm_probability: float,
  deterministic: bool = True,
  dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(objective, {'loss', 'accuracy'}) of the masked-LM task on corpus windows (B, L + 1).

  The inputs are mlm_inputs(windows) corrupted by mask_tokens(inputs, rng, ...) with [CLS], [SEP]
  and [PAD] never chosen; the loss is the mean cross-entropy (nats) over the chosen positions and
  the accuracy the fraction of them whose argmax is the original token (both 0 when a batch has
  nothing chosen, possible only for tiny batches). The objective is the loss. dropout_rng is
  needed when not deterministic.
  """
  vocab_size = model.config.vocab_size
  ids_BxL = mlm_inputs(windows_BxL1, cls_id, sep_id)
  corrupted_BxL, selected_BxL = mask_tokens(
    ids_BxL,
    rng,
    mask_id=mask_id(vocab_size),
    vocab_size=vocab_size - 1,
    special_ids=(cls_id, sep_id, pad_id),
    probability=mlm_probability,
  )
  rngs = None if deterministic else {'dropout': dropout_rng}
  logits_BxLxV = model.apply(
    {'params': params}, corrupted_BxL, deterministic=deterministic, rngs=rngs
  )
  loss = masked_mean(token_cross_entropy(logits_BxLxV, ids_BxL), selected_BxL)
  accuracy = masked_mean(jnp.argmax(logits_BxLxV, axis=-1) == ids_BxL, selected_BxL)
  return loss, {'loss': loss, 'accuracy': accuracy}


def _objective(model: BERT, config: ml_collections.ConfigDict, tokenizer: Tokenizer):
  return lambda params, rows, deterministic, rng: loss_and_metrics(
    model,
    params,
    rows,
    jax.random.fold_in(rng, 0),
    cls_id=tokenizer.start_id,
    sep_id=tokenizer.delim_id,
    pad_id=tokenizer.pad_id,
    mlm_probability=config.bert.mlm_probability,
    deterministic=deterministic,
    dropout_rng=jax.random.fold_in(rng, 1),
  )


def _check_config(config: ml_collections.ConfigDict) -> None:
  check_documents_source(config)
  if config.train.seq_len < 3:
    raise UserError(f'train.seq_len={config.train.seq_len}: BERT needs room for [CLS] and [SEP]')


ARCHITECTURE = Architecture(
  name='bert',
  build=lambda config, pad_id: BERT(config),
  example_inputs=token_ids,
  # The windows a GPT trains on (mlm_inputs makes them [CLS] ... [SEP]).
  row_width=windows.row_width,
  objective=_objective,
  load_data=windows.load,
  check_config=_check_config,
  config_fields={
    'bert.type_vocab_size': COUNT,
    'bert.mlm_probability': Field(float, low=0, below=1, resumable=True),  # only the loss reads it
  },
  model_fields=lambda config: {'type_vocab_size': config.bert.type_vocab_size},
  model_vocab_size=mlm_vocab_size,
)


# ---------------------------------------------------------------------------------------------
# Fine-tuning


class BertClassifier(nn.Module):
  """Token ids (B, L) (with [CLS] first, padded with pad_id) -> class logits (B, classes), float32.

  The encoder is a BERT named 'bert', so pre-trained params drop in as params['bert']; its MLM
  head's parameters come along unused (jit drops its computation). The pooler, Dense(D) + tanh on
  the [CLS] hidden state, and the classifier are new.
  """

  config: ModelConfig
  n_classes: int
  pad_id: int
  dropout: float = 0.1

  @nn.compact
  def __call__(
    self, ids_BxL: jax.Array, segments_BxL: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    cfg = self.config
    _, hidden_BxLxD = BERT(cfg, name='bert')(
      ids_BxL,
      segments_BxL,
      deterministic,
      return_hidden=True,
      mask_Bx1xL=padding_mask(ids_BxL, self.pad_id),
    )
    pooled_BxD = jnp.tanh(dense(cfg, cfg.d_model, 'pooler')(hidden_BxLxD[:, 0]))
    pooled_BxD = nn.Dropout(self.dropout)(pooled_BxD, deterministic=deterministic)
    return dense(cfg, self.n_classes, 'classifier')(pooled_BxD).astype(jnp.float32)
