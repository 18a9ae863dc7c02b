"""The run config: one declaration of its fields (type, range or choices, and whether the field may
change when a run resumes), the checks made before anything expensive happens, the mapping of a
config.json written by an older gptjax to today's fields, and the model config derived from it.

The fields and their meaning are documented in gptjax/configs/default.py. The choices of the model
fields are the Literal types of gptjax/models/config.py; an architecture's own requirements are
its record's check_config (gptjax/models/). Each problem is reported as one UserError line naming
the field.
"""

import importlib
import re
import sys
import typing

import jax
import ml_collections

from gptjax.data import pairs, sources, windows
from gptjax.errors import UserError
from gptjax.fields import (
  COUNT,
  FRACTION,
  NATURAL,
  NON_NEGATIVE,
  Field,
  check_field,
  resumable,
  upgrade,
)
from gptjax.models import registry
from gptjax.models.config import ModelConfig


def _model_choices(name: str) -> tuple[str, ...]:
  return typing.get_args(typing.get_type_hints(ModelConfig)[name])


# The shared sections' fields; each architecture's record adds its own section's (gptjax/models/).
FIELDS: dict[str, Field] = {
  'seed': NATURAL,
  'model.architecture': Field(str, choices=tuple(registry.ARCHITECTURES)),
  'model.n_layers': COUNT,
  'model.n_heads': COUNT,
  'model.d_model': COUNT,
  'model.d_ff': COUNT,
  'model.n_ctx': COUNT,
  'model.norm': Field(str, choices=_model_choices('norm')),
  'model.pos_emb': Field(str, choices=_model_choices('pos_emb')),
  'model.tie_embeddings': Field(bool),
  'model.embd_dropout': FRACTION,
  'model.attn_dropout': FRACTION,
  'model.resid_dropout': FRACTION,
  # Compute-only settings: the same parameters, other kernels or memory use.
  'model.attention_impl': Field(str, choices=_model_choices('attention_impl'), resumable=True),
  'model.dtype': Field(str, choices=_model_choices('dtype'), resumable=True),
  'model.remat': Field(str, choices=_model_choices('remat'), resumable=True),
  'model.param_dtype': Field(str, choices=_model_choices('param_dtype')),
  'model.scan_layers': Field(bool),  # stacks the blocks' parameters: another checkpoint layout
  'model.init_std': NON_NEGATIVE,
  'model.layer_norm_eps': NON_NEGATIVE,
  'model.parametrization': Field(str, choices=_model_choices('parametrization')),
  'model.base_d_model': NATURAL,
  'model.mup_output_multiplier': NON_NEGATIVE,
  'model.depth_scaling': Field(str, choices=_model_choices('depth_scaling')),
  'model.base_n_layers': NATURAL,
  'tokenizer.kind': Field(str, choices=('sentencepiece', 'byte', 'char', 'gpt2')),
  'tokenizer.vocab_size': COUNT,
  'data.source': Field(str, choices=tuple(dict.fromkeys(windows.SOURCES + pairs.SOURCES))),
  'data.text_files': Field(str),
  'data.tfds_name': Field(str),
  'data.tfds_data_dir': Field(str),
  'data.tfds_text_key': Field(str),
  'data.tfds_train_split': Field(str),
  'data.tfds_eval_split': Field(str),
  'data.pairs_files': Field(str),
  'data.source_key': Field(str),
  'data.target_key': Field(str),
  'data.val_fraction': Field(float),  # in (0, 1), checked in validate
  'data.max_documents': NATURAL,
  'data.max_train_tokens': Field(int, low=0, resumable=True),  # slices the cache, changes no file
  'data.train_subset': Field(str, choices=('first', 'spread')),  # slices it too
  **resumable(
    {  # the schedule, the optimizer and the cadence: what a longer run changes
      'train.seq_len': COUNT,
      'train.global_batch_size': COUNT,
      'train.grad_accum_steps': COUNT,
      'train.steps': COUNT,
      'train.lr': NON_NEGATIVE,
      'train.warmup_steps': NATURAL,
      'train.schedule': Field(str, choices=('cosine', 'rsqrt', 'linear')),
      'train.min_lr_ratio': Field(float, low=0, high=1),
      'train.b1': FRACTION,
      'train.b2': FRACTION,
      'train.eps': NON_NEGATIVE,
      'train.weight_decay': NON_NEGATIVE,
      'train.grad_clip': NON_NEGATIVE,
      'train.sharding': Field(str, choices=('replicate', 'fsdp')),
      'train.log_every': COUNT,
      'train.eval_every': COUNT,
      'train.eval_batches': NATURAL,
      'train.final_eval_batches': Field(int, low=-1),
      'train.checkpoint_every': COUNT,
      'train.keep_checkpoints': COUNT,
      'train.nonfinite': Field(str, choices=('stop', 'skip')),
      'train.preemption_grace_s': NON_NEGATIVE,
      'sample.prompt': Field(str),
      'sample.max_new_tokens': NATURAL,
      'sample.temperature': NON_NEGATIVE,
      'sample.top_k': NATURAL,
      'distributed.initialize': Field(bool),
      'distributed.coordinator_address': Field(str),
      'distributed.num_processes': NATURAL,
      'distributed.process_id': Field(int, low=-1),
    }
  ),
  **resumable(
    {  # where metrics go besides the workdir's files: nothing else depends on it
      'logging.wandb': Field(bool),  # needs the wandb package: checked in validate
      'logging.wandb_project': Field(str),
      'logging.wandb_entity': Field(str),
      'logging.wandb_name': Field(str),
      'logging.wandb_tags': Field(str),
      'logging.wandb_group': Field(str),
    }
  ),
  **{
    name: field
    for record in registry.ARCHITECTURES.values()
    for name, field in record.config_fields.items()
  },
}

RESUMABLE = frozenset(name for name, field in FIELDS.items() if field.resumable)


def read_config(path: str) -> ml_collections.ConfigDict:
  """The run config saved at `path` (a workdir's config.json), upgraded to today's fields; a
  UserError naming the file when it is not a JSON object."""
  saved, problem = sources.json_object(path)
  if problem is not None:
    raise UserError(
      f'{path} is not a readable run config ({problem}); put the original back, or delete it '
      "and run gptjax.main with the run's config to record it again, or use a new workdir"
    )
  return ml_collections.ConfigDict(upgrade(saved))


def get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split('.'):
    if not isinstance(value, ml_collections.ConfigDict) or part not in value:
      raise UserError(f'config has no field {dotted}')
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> None:
  """Raises UserError for the first problem found in `config`."""
  for name, field in FIELDS.items():
    check_field(name, field, get(config, name))
  model, train = config.model, config.train
  if not 0 < config.data.val_fraction < 1:
    raise UserError(f'data.val_fraction={config.data.val_fraction} must be between 0 and 1')
  if model.d_model % model.n_heads:
    raise UserError(
      f'model.d_model={model.d_model} is not divisible by model.n_heads={model.n_heads}'
    )
  if model.pos_emb == 'rotary' and (model.d_model // model.n_heads) % 2:
    raise UserError(
      f'model.pos_emb=rotary needs an even head width, not {model.d_model // model.n_heads}'
    )
  if model.parametrization == 'mup' and not model.base_d_model:
    raise UserError(
      "model.parametrization='mup' needs model.base_d_model, the width its learning rate was "
      'tuned at (the multipliers are relative to it)'
    )
  if model.depth_scaling == 'completep' and not model.base_n_layers:
    raise UserError(
      "model.depth_scaling='completep' needs model.base_n_layers, the depth its learning rate "
      'was tuned at'
    )
  if model.depth_scaling == 'completep' and model.norm != 'pre':
    raise UserError(
      "model.depth_scaling='completep' scales residual branches x + f(LN(x)): it needs "
      "model.norm='pre'"
    )
  if model.parametrization == 'mup' and model.base_d_model % model.n_heads:
    raise UserError(
      f'model.base_d_model={model.base_d_model} is not divisible by '
      f'model.n_heads={model.n_heads} (the base model has the same heads, narrower)'
    )
  registry.get(model.architecture).check_config(config)
  if model.attn_dropout > 0 and model.attention_impl != 'einsum':
    raise UserError(
      f'model.attn_dropout={model.attn_dropout} needs model.attention_impl=einsum '
      '(jax.nn.dot_product_attention has no dropout)'
    )
  if config.tokenizer.kind != 'byte' and config.tokenizer.vocab_size < 300:
    raise UserError(
      f'tokenizer.vocab_size={config.tokenizer.vocab_size} is too small: the 256 byte '
      'tokens and the specials alone take 263; use at least 300'
    )
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
    raise UserError(
      f'train.global_batch_size={train.global_batch_size} is not divisible by the '
      f'{device_count} devices'
    )
  if per_device % train.grad_accum_steps:
    raise UserError(
      f'the per-device batch {per_device} is not divisible by '
      f'train.grad_accum_steps={train.grad_accum_steps}'
    )
  if config.logging.wandb:
    try:
      wandb = importlib.import_module('wandb')
    except ImportError as e:
      raise UserError(
        f'logging.wandb=True needs the wandb package ({e}): pip install wandb, or leave '
        'logging.wandb off'
      ) from None
    version = getattr(wandb, '__version__', '')
    if tuple(int(part) for part in re.findall(r'\d+', version)[:3]) < (0, 19, 10):
      raise UserError(  # the runs of a stack, open together, need wandb.init(reinit='create_new')
        f'logging.wandb=True needs wandb 0.19.10 or newer, not {version or "an unknown version"}: '
        'pip install -U wandb'
      )


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  """The model's config: the model fields of `config` plus the vocabulary size of the tokenizer
  (and, for BERT, its [MASK] id after it).

  cuDNN attention exists only on NVIDIA GPUs; elsewhere it falls back to XLA's, with a warning.
  """
  fields = config.model.to_dict()
  if isinstance(fields['remat'], bool):  # a config.json written before remat policies existed
    fields['remat'] = 'full' if fields['remat'] else 'none'
  if fields['attention_impl'] == 'cudnn' and jax.default_backend() != 'gpu':
    print(
      f"warning: model.attention_impl='cudnn' needs an NVIDIA GPU; using 'xla' on "
      f'{jax.default_backend()}',
      file=sys.stderr,
    )
    fields['attention_impl'] = 'xla'
  architecture = registry.get(fields.get('architecture', 'gpt'))
  fields.update(architecture.model_fields(config))
  return ModelConfig(vocab_size=architecture.model_vocab_size(vocab_size), **fields)
