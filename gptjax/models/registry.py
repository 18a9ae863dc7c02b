"""The three architectures behind one interface, so training, checkpoints, sweeps and accounting
treat them alike.

  model.architecture  module                            rows of a training batch, and the objective
  'gpt'               model.GPT                         (B, seq_len + 1) token windows; next-token
                                                        cross-entropy
  'bert'              bert.BERT                         the same windows as [CLS] ... [SEP]; masked-LM
                                                        cross-entropy on 15 % of the tokens
  'encoder_decoder'   encoder_decoder.EncoderDecoder    (B, source_len + seq_len + 1) source | target
                                                        rows (gptjax/pairs.py); label-smoothed
                                                        cross-entropy of the target

An objective maps (params, rows, deterministic, rng) to (the scalar to minimise, metrics); the
metrics hold 'loss', the plain cross-entropy in nats per predicted token, and 'accuracy' where the
architecture has one.
"""
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gptjax.data import tokenizers as tokenizer_lib
from gptjax.models import bert, encoder_decoder
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT, output_embedding
from gptjax.models.losses import fused_cross_entropy

Objective = Callable[[dict, jax.Array, bool, jax.Array | None], tuple[jax.Array, dict]]


def build(config: ModelConfig, pad_id: int = 0) -> nn.Module:
  """The architecture's module; pad_id marks the encoder-decoder's source padding."""
  if config.architecture == 'bert':
    return bert.BERT(config)
  if config.architecture == 'encoder_decoder':
    return encoder_decoder.EncoderDecoder(config, pad_id=pad_id)
  return GPT(config)


def model_vocab_size(architecture: str, tokenizer_vocab_size: int) -> int:
  """BERT's [MASK] is one id past the tokenizer's vocabulary; the others use it as it is."""
  return bert.mlm_vocab_size(tokenizer_vocab_size) if architecture == 'bert' else tokenizer_vocab_size


def init_params(model: nn.Module, rng: jax.Array) -> dict:
  """Freshly initialised parameters (shapes do not depend on the sequence lengths used here)."""
  ids_1xL = jnp.zeros((1, model.config.n_ctx), jnp.int32)
  inputs = (ids_1xL, ids_1xL) if model.config.architecture == 'encoder_decoder' else (ids_1xL,)
  return model.init(rng, *inputs)['params']


def row_width(config: ml_collections.ConfigDict) -> int:
  """Columns of a training batch's rows (see the table above)."""
  if config.model.architecture == 'encoder_decoder':
    return config.train.source_len + config.train.seq_len + 1
  return config.train.seq_len + 1


def make_objective(model: nn.Module, train: ml_collections.ConfigDict,
                   tokenizer: tokenizer_lib.Tokenizer | None) -> Objective:
  """The architecture's objective; the GPT's needs no tokenizer."""
  architecture = model.config.architecture
  if architecture == 'bert':
    return lambda params, rows, deterministic, rng: bert.loss_and_metrics(
        model, params, rows, jax.random.fold_in(rng, 0), cls_id=tokenizer.start_id,
        sep_id=tokenizer.delim_id, pad_id=tokenizer.pad_id, mlm_probability=train.mlm_probability,
        deterministic=deterministic, dropout_rng=jax.random.fold_in(rng, 1))
  if architecture == 'encoder_decoder':
    return lambda params, rows, deterministic, rng: encoder_decoder.loss_and_metrics(
        model, params, rows, source_len=train.source_len, pad_id=tokenizer.pad_id,
        label_smoothing=train.label_smoothing, deterministic=deterministic, rng=rng)

  def next_token(params, rows_BxL1, deterministic, rng):
    loss = next_token_cross_entropy(model, params, rows_BxL1, deterministic, rng)
    return loss, {'loss': loss}
  return next_token


def next_token_cross_entropy(model: GPT, params, batch_BxL1: jax.Array, deterministic: bool = True,
                             rng: jax.Array | None = None) -> jax.Array:
  """Mean next-token loss (nats) of windows (B, L + 1): inputs are [:, :-1], targets [:, 1:]."""
  rngs = None if deterministic else {'dropout': rng}
  # The logits the model also returns are unused here, and jit drops their computation: the loss
  # fuses the output projection with the softmax (see gptjax/loss.py), multiplying in the hidden
  # states' dtype.
  _, hidden_BxLxD = model.apply({'params': params}, batch_BxL1[:, :-1], deterministic=deterministic,
                                rngs=rngs, return_hidden=True)
  hidden_BxLxD = hidden_BxLxD.astype(model.config.dtype)
  return fused_cross_entropy(hidden_BxLxD.reshape(-1, hidden_BxLxD.shape[-1]),
                             output_embedding(model.config, params), batch_BxL1[:, 1:].reshape(-1))
