"""Checks a run's config before anything expensive happens, and derives the model's config from it.

The fields and their meaning are documented in configs/default.py. Each problem is reported as one
UserError line naming the field.
"""
import sys

import jax
import ml_collections

from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.models.config import ModelConfig

_CHOICES = {
    'model.architecture': ('gpt', 'bert', 'encoder_decoder'),
    'model.norm': ('pre', 'post'),
    'model.pos_emb': ('learned', 'sinusoidal', 'rotary'),
    'model.attention_impl': ('xla', 'cudnn', 'einsum'),
    'model.remat': ('none', 'full', 'dots_saveable'),
    'model.dtype': ('float32', 'bfloat16', 'float16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'tokenizer.kind': ('sentencepiece', 'byte', 'char', 'gpt2'),
    'data.source': ('stdlib', 'text_files', 'tfds', 'stdlib_docstrings', 'pairs_jsonl'),
    'train.schedule': ('cosine', 'rsqrt'),
    'train.sharding': ('replicate', 'fsdp'),
    'train.nonfinite': ('stop', 'skip'),
}
_POSITIVE_INTS = (
    'model.n_layers', 'model.n_heads', 'model.d_model', 'model.d_ff', 'model.n_ctx',
    'model.type_vocab_size', 'tokenizer.vocab_size', 'train.seq_len', 'train.source_len',
    'train.global_batch_size', 'train.grad_accum_steps', 'train.steps', 'train.log_every', 'train.eval_every', 'train.eval_batches',
    'train.checkpoint_every', 'train.keep_checkpoints')
_NON_NEGATIVE_INTS = ('seed', 'model.n_encoder_layers', 'data.max_documents',
                      'data.max_train_tokens', 'train.warmup_steps', 'sample.max_new_tokens',
                      'sample.top_k')
_FRACTIONS = ('model.embd_dropout', 'model.attn_dropout', 'model.resid_dropout', 'train.b1',
              'train.b2', 'train.label_smoothing', 'train.mlm_probability')  # in [0, 1)
_NON_NEGATIVE_FLOATS = ('train.min_lr_ratio', 'train.lr', 'train.preemption_grace_s', 'train.eps', 'train.weight_decay', 'train.grad_clip',
                        'sample.temperature', 'model.init_std', 'model.layer_norm_eps')


def _get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split('.'):
    if part not in value:
      raise UserError(f'config has no field {dotted}')
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> None:
  """Raises UserError for the first problem found in `config`."""
  for field, choices in _CHOICES.items():
    if _get(config, field) not in choices:
      raise UserError(f'{field}={_get(config, field)!r}; choose one of {", ".join(choices)}')
  for field in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
    value = _get(config, field)
    if not isinstance(value, int) or isinstance(value, bool):
      raise UserError(f'{field}={value!r} must be an integer')
    if value < (1 if field in _POSITIVE_INTS else 0):
      raise UserError(f'{field}={value} must be {"positive" if field in _POSITIVE_INTS else ">= 0"}')
  for field in _FRACTIONS + _NON_NEGATIVE_FLOATS:
    value = _get(config, field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise UserError(f'{field}={value!r} must be a number >= 0')
    if field in _FRACTIONS and value >= 1:
      raise UserError(f'{field}={value} must be below 1')
  if config.train.min_lr_ratio > 1:
    raise UserError(f'train.min_lr_ratio={config.train.min_lr_ratio} must be at most 1')
  if not 0 < config.data.val_fraction < 1:
    raise UserError(f'data.val_fraction={config.data.val_fraction} must be between 0 and 1')

  model, train = config.model, config.train
  if model.d_model % model.n_heads:
    raise UserError(f'model.d_model={model.d_model} is not divisible by model.n_heads={model.n_heads}')
  if model.pos_emb == 'rotary' and (model.d_model // model.n_heads) % 2:
    raise UserError('model.pos_emb=rotary needs an even head width, not '
                    f'{model.d_model // model.n_heads}')
  _validate_architecture(config)
  if model.attn_dropout > 0 and model.attention_impl != 'einsum':
    raise UserError(f'model.attn_dropout={model.attn_dropout} needs model.attention_impl=einsum '
                    '(jax.nn.dot_product_attention has no dropout)')
  if config.tokenizer.kind != 'byte' and config.tokenizer.vocab_size < 300:
    raise UserError(f'tokenizer.vocab_size={config.tokenizer.vocab_size} is too small: the 256 byte '
                    'tokens and the specials alone take 263; use at least 300')
  if config.data.source == 'text_files' and not config.data.text_files:
    raise UserError("data.source='text_files' needs data.text_files (a glob or a directory)")
  if config.data.source == 'tfds' and not config.data.tfds_name:
    raise UserError("data.source='tfds' needs data.tfds_name")
  if train.seq_len > model.n_ctx:
    raise UserError(f'train.seq_len={train.seq_len} is longer than model.n_ctx={model.n_ctx}')
  if train.warmup_steps > train.steps:
    raise UserError(f'train.warmup_steps={train.warmup_steps} exceeds train.steps={train.steps}')
  per_device, remainder = divmod(train.global_batch_size, device_count)
  if remainder or train.global_batch_size % process_count:
    raise UserError(f'train.global_batch_size={train.global_batch_size} is not divisible by the '
                    f'{device_count} devices')
  if per_device % train.grad_accum_steps:
    raise UserError(f'the per-device batch {per_device} is not divisible by '
                    f'train.grad_accum_steps={train.grad_accum_steps}')


_PAIR_SOURCES = ('stdlib_docstrings', 'pairs_jsonl', 'tfds')


def _validate_architecture(config: ml_collections.ConfigDict) -> None:
  """The data and settings each architecture needs."""
  model, source = config.model, config.data.source
  if model.architecture == 'encoder_decoder':
    if model.n_encoder_layers < 1:
      raise UserError('model.architecture=encoder_decoder needs model.n_encoder_layers >= 1')
    if source not in _PAIR_SOURCES:
      raise UserError(f'model.architecture=encoder_decoder trains on (source, target) pairs: '
                      f'data.source={source!r}; use one of {", ".join(_PAIR_SOURCES)}')
    if config.train.source_len > model.n_ctx:
      raise UserError(f'train.source_len={config.train.source_len} is longer than '
                      f'model.n_ctx={model.n_ctx}')
    if config.tokenizer.kind == 'gpt2':
      raise UserError("tokenizer.kind='gpt2' pads with its end-of-text token, which would hide "
                      'the targets\' EOS from the loss; use sentencepiece, byte or char')
    if source == 'pairs_jsonl' and not config.data.pairs_files:
      raise UserError("data.source='pairs_jsonl' needs data.pairs_files (a glob of JSONL files)")
  elif source in ('stdlib_docstrings', 'pairs_jsonl'):
    raise UserError(f'data.source={source!r} gives (source, target) pairs, which only '
                    'model.architecture=encoder_decoder trains on')
  if model.architecture == 'bert' and config.train.seq_len < 3:
    raise UserError(f'train.seq_len={config.train.seq_len}: BERT needs room for [CLS] and [SEP]')


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  """The model's config: the model fields of `config` plus the vocabulary size of the tokenizer
  (and, for BERT, its [MASK] id after it).

  cuDNN attention exists only on NVIDIA GPUs; elsewhere it falls back to XLA's, with a warning.
  """
  fields = config.model.to_dict()
  if isinstance(fields['remat'], bool):  # a config.json written before remat policies existed
    fields['remat'] = 'full' if fields['remat'] else 'none'
  if fields['attention_impl'] == 'cudnn' and jax.default_backend() != 'gpu':
    print(f"warning: model.attention_impl='cudnn' needs an NVIDIA GPU; using 'xla' on "
          f'{jax.default_backend()}', file=sys.stderr)
    fields['attention_impl'] = 'xla'
  vocab_size = registry.model_vocab_size(fields.get('architecture', 'gpt'), vocab_size)
  return ModelConfig(vocab_size=vocab_size, **fields)
