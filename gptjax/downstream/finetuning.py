"""Supervised fine-tuning of a pre-trained GPT, as GPT-1 does it (Radford et al. 2018, 3.2-3.3), or
of a pre-trained BERT, as BERT does it (Devlin et al. 2019, 3-4).

  python -m gptjax.finetune --config finetune --workdir runs/ft_next_line \\
      --config.finetune.init_from=runs/default --config.finetune.task=stdlib_next_line
  python -m gptjax.finetune --config finetune --workdir runs/ft_bert \\
      --config.finetune.init_from=runs/bert --config.finetune.task=stdlib_next_line \\
      --config.finetune.lm_coef=0

The architecture is init_from's (model.architecture in its config.json; config.model's with no
init_from); what fine-tuning does with each is one record in gptjax/downstream/backbones.py, and
everything else here is shared. Each example becomes token sequences (gptjax/downstream/
task_inputs.py): for a GPT, START text EXTRACT, START premise DELIM hypothesis EXTRACT, ...; for a
BERT, [CLS] text [SEP], [CLS] premise [SEP] hypothesis [SEP], ..., with segment ids 0 and 1 and
the padding masked. A linear head reads the final hidden state at EXTRACT (GPT) or [CLS] (BERT),
after dropout: class logits, or one score per choice with a softmax over the choices. The
objective is L3 = L2 + lm_coef * L1: L2 the task's cross-entropy, L1 the mean next-token
cross-entropy over every token of the same input sequences. A BERT has no L1 (it is no
left-to-right LM), so with a BERT lm_coef must be 0: anything else is a UserError saying so.

The run starts from a pre-training workdir (finetune.init_from) and writes only into its own
workdir: config.json, finetune.json (what load_finetuned needs, the model config with its
architecture among it), the tokenizer, metrics.jsonl, checkpoints/<step>/ holding only the best
checkpoint by validation accuracy, and results.json.
Until results.json is written, resume/<step>/ holds the state at the last epoch's end (or at
SIGTERM): the same command resumes an interrupted run from it, and refuses a config that changes
the run, as gptjax.main does. On a finished workdir the same command returns its results.

Training is pre-training's (gptjax/training): the objective runs through the same jitted step
(gradient accumulation, the non-finite guard) and loop (metrics read back once an epoch, SIGTERM,
multi-host), with the same optimizer builder; this module says only what fine-tuning changes:
epochs of shuffled examples, validation accuracy after each, and which checkpoint is kept.
"""

import collections
import dataclasses
import json
import math
import os
import shutil
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gptjax import configuration
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.data.atomic import write_atomic
from gptjax.downstream import backbones, task_inputs, tasks
from gptjax.downstream.task_inputs import FINETUNE_KINDS, Encoded
from gptjax.errors import Preempted, UserError
from gptjax.models import registry
from gptjax.models.config import ModelConfig
from gptjax.models.losses import token_cross_entropy
from gptjax.training import checkpoint, sharding, trainer
from gptjax.training import state as state_lib
from gptjax.training import step as step_lib
from gptjax.training import workdir as workdir_lib
from gptjax.training.metrics import MetricsWriter, read_metrics
from gptjax.training.optimizer import learning_rate_schedule, make_optimizer
from gptjax.training.state import TrainState

# --- Model and objective ----------------------------------------------------------------------


class TaskHead(nn.Module):
  """Dropout, then a linear map of the hidden state the head reads (at EXTRACT, or [CLS]) to
  num_outputs scores."""

  num_outputs: int
  dropout: float

  @nn.compact
  def __call__(self, h_BxD: jax.Array, deterministic: bool) -> jax.Array:
    h_BxD = nn.Dropout(self.dropout)(h_BxD, deterministic=deterministic)
    return nn.Dense(self.num_outputs, kernel_init=nn.initializers.normal(0.02), name='linear')(
      h_BxD
    )


@dataclasses.dataclass(frozen=True)
class Finetuner:
  """The pre-trained model (a GPT or a BERT) and a task head; parameters are
  {backbone.params_key: the model's, 'head': the head's} ('gpt' or 'bert')."""

  model: nn.Module
  kind: str
  num_labels: int  # classes; unused for multiple choice (one score per choice)
  head_dropout: float

  @property
  def backbone(self) -> backbones.Backbone:
    """What fine-tuning does with this architecture (gptjax/downstream/backbones.py)."""
    return backbones.get(self.model.config.architecture)

  @property
  def head(self) -> TaskHead:
    return TaskHead(1 if self.kind == 'multiple_choice' else self.num_labels, self.head_dropout)

  def init_head(self, rng: jax.Array) -> dict:
    h_1xD = jnp.zeros((1, self.model.config.d_model))
    return self.head.init(rng, h_1xD, deterministic=True)['params']

  def init_params(
    self, model_rng: jax.Array, head_rng: jax.Array, model_params: dict | None = None
  ) -> dict:
    """The parameters: `model_params` (a random init of the model where None) and a new head."""
    if model_params is None:
      inputs = registry.get(self.model.config.architecture).example_inputs(self.model.config)
      model_params = self.model.init(model_rng, *inputs)['params']
    return {self.backbone.params_key: model_params, 'head': self.init_head(head_rng)}

  def apply(
    self,
    params: dict,
    ids_BxRxL: jax.Array,
    lengths_BxR: jax.Array,
    deterministic: bool = True,
    rng: jax.Array | None = None,
    segments_BxRxL: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array | None]:
    """(task scores (B, K): class logits or per-choice scores, LM logits (B, R, L, V) or None
    where the architecture has no LM loss). segments_BxRxL: 0 everywhere when not given."""
    batch, n_rows, seq_len = ids_BxRxL.shape
    if segments_BxRxL is None:
      segments_BxRxL = jnp.zeros_like(ids_BxRxL)
    model_rng, head_rng = jax.random.split(rng) if rng is not None else (None, None)
    logits_NxLxV, h_NxD = self.backbone.features(
      self.model,
      params[self.backbone.params_key],
      ids_BxRxL.reshape(batch * n_rows, seq_len),
      segments_BxRxL.reshape(batch * n_rows, seq_len),
      lengths_BxR.reshape(-1),
      deterministic,
      None if deterministic else {'dropout': model_rng},
    )
    h_BxRxD = h_NxD.reshape(batch, n_rows, -1)
    head = lambda h: self.head.apply(
      {'params': params['head']},
      h,
      deterministic=deterministic,
      rngs=None if deterministic else {'dropout': head_rng},
    )
    if self.kind == 'multiple_choice':
      scores_BxR = head(h_BxRxD)[..., 0]
      scores_Bxoutputs = jnp.where(lengths_BxR > 0, scores_BxR, -1e9)  # padding choices never win
    elif self.kind == 'similarity':
      scores_Bxoutputs = head(h_BxRxD.sum(axis=1))
    else:
      scores_Bxoutputs = head(h_BxRxD[:, 0])
    if logits_NxLxV is None:
      return scores_Bxoutputs, None
    return scores_Bxoutputs, logits_NxLxV.reshape(batch, n_rows, seq_len, -1)


def objective(
  scores_Bxoutputs: jax.Array, logits_BxRxLxV: jax.Array | None, batch: dict, lm_coef: float
) -> tuple[jax.Array, dict]:
  """L3 = L2 + lm_coef * L1 over the examples with weight 1 (padding rows of a batch weigh 0).

  L2: mean cross-entropy of the task scores. L1: mean next-token cross-entropy over every
  token after the first of each real row (markers included), as in GPT-1's code. Without LM
  logits (BERT's) there is no L1: the objective is L2, and lm_coef must be 0.
  """
  weights_B = batch['weights']
  task_B = token_cross_entropy(scores_Bxoutputs, batch['labels'])
  task_loss = jnp.sum(task_B * weights_B) / jnp.maximum(weights_B.sum(), 1)
  correct_B = (jnp.argmax(scores_Bxoutputs, axis=-1) == batch['labels']) * weights_B
  if logits_BxRxLxV is None:
    if lm_coef:
      raise ValueError(f'lm_coef={lm_coef} without LM logits')
    return task_loss, {'task_loss': task_loss, 'correct': correct_B.sum()}
  ids_BxRxL, lengths_BxR = batch['ids'], batch['lengths']
  token_BxRxL1 = token_cross_entropy(logits_BxRxLxV[:, :, :-1], ids_BxRxL[:, :, 1:])
  positions_L1 = jnp.arange(ids_BxRxL.shape[2] - 1)
  mask_BxRxL1 = (positions_L1 + 1 < lengths_BxR[..., None]) & (weights_B[:, None, None] > 0)
  lm_loss = jnp.sum(token_BxRxL1 * mask_BxRxL1) / jnp.maximum(mask_BxRxL1.sum(), 1)
  return task_loss + lm_coef * lm_loss, {
    'task_loss': task_loss,
    'lm_loss': lm_loss,
    'correct': correct_B.sum(),
  }


def make_objective(finetuner: Finetuner, lm_coef: float):
  """Fine-tuning as an objective of the shared step (gptjax.models.architecture.Objective):
  (params, batch, deterministic, rng) -> (L3, metrics) with 'loss' (L3, logged as train_loss),
  task_loss (L2), lm_loss (L1, where the architecture has one) and correct (the batch's correct
  predictions)."""

  def finetune_objective(
    params: dict, batch: dict, deterministic: bool, rng: jax.Array | None
  ) -> tuple[jax.Array, dict]:
    scores_Bxoutputs, logits_BxRxLxV = finetuner.apply(
      params,
      batch['ids'],
      batch['lengths'],
      deterministic=deterministic,
      rng=rng,
      segments_BxRxL=batch.get('segments'),
    )
    value, parts = objective(scores_Bxoutputs, logits_BxRxLxV, batch, lm_coef)
    return value, {'loss': value, **parts}

  return finetune_objective


# --- Where the weights come from --------------------------------------------------------------


def extend_vocab(params: dict, vocab_size: int, rng: jax.Array, std: float = 0.02) -> dict:
  """`params` with token embedding rows (and untied output columns) up to vocab_size, the new
  ones drawn from N(0, std^2): for a checkpoint without rows for START, DELIM and EXTRACT."""
  table_VxD = params['wte']['embedding']
  n_new = vocab_size - table_VxD.shape[0]
  if n_new <= 0:
    return params
  wte_rng, head_rng = jax.random.split(rng)
  new_rows = lambda r, d: std * jax.random.normal(r, (n_new, d), table_VxD.dtype)
  params = {
    **params,
    'wte': {'embedding': jnp.concatenate([table_VxD, new_rows(wte_rng, table_VxD.shape[1])])},
  }
  if 'lm_head' in params:
    kernel_DxV = params['lm_head']['kernel']
    new_DxN = new_rows(head_rng, kernel_DxV.shape[0]).T
    params['lm_head'] = {'kernel': jnp.concatenate([kernel_DxV, new_DxN], axis=1)}
  return params


def load_pretrained(
  workdir: str, seed: int
) -> tuple[ml_collections.ConfigDict, tokenizer_lib.Tokenizer, ModelConfig, dict]:
  """(run config, tokenizer, model config, parameters) of the pre-training run in `workdir`'s
  latest checkpoint; a GPT's embedding table is extended to the tokenizer's vocabulary if it is
  shorter."""
  run_config, tokenizer = read_run(workdir)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise UserError(f'finetune.init_from={workdir} has no checkpoints/')
  model_config = configuration.model_config(run_config, tokenizer.vocab_size)
  backbone = backbones.get(model_config.architecture, f'finetune.init_from={workdir}')
  rows = _embedding_rows(workdir)
  if rows != model_config.vocab_size and not (
    backbone.extend_vocab and rows < model_config.vocab_size
  ):
    raise UserError(
      f'finetune.init_from={workdir}: its checkpoint has {rows} token embedding rows, but its '
      f'tokenizer makes a {model_config.architecture} of {model_config.vocab_size}'
    )
  model = registry.build(dataclasses.replace(model_config, vocab_size=rows), tokenizer.pad_id)
  abstract = jax.eval_shape(
    lambda: registry.init_params(model, jax.random.PRNGKey(run_config.seed))
  )
  params = state_lib.restore_params(workdir, abstract)  # the params only: no optimizer state
  params = extend_vocab(params, model_config.vocab_size, jax.random.PRNGKey(seed))
  return run_config, tokenizer, model_config, params


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, tokenizer_lib.Tokenizer]:
  """The config and tokenizer of the pre-training run in `workdir`: of an architecture the
  Finetuner is built on (gptjax/downstream/backbones.py), with the tokenizer's markers for it."""
  where = f'finetune.init_from={workdir}'
  run_config, tokenizer = state_lib.read_run(
    workdir, tuple(backbones.BACKBONES), where, 'pre-training run'
  )
  try:
    backbones.get(run_config.model.get('architecture', 'gpt'), where).markers(tokenizer)
  except UserError as e:
    raise UserError(f'{where}: {e}') from None
  return run_config, tokenizer


def _embedding_rows(workdir: str) -> int:
  """Rows of the token embedding table in the latest checkpoint, from its metadata."""
  reader = ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), 'checkpoints'),
    item_handlers=ocp.StandardCheckpointHandler(),
    options=ocp.CheckpointManagerOptions(read_only=True),
  )
  try:
    if reader.latest_step() is None:
      raise UserError(f'finetune.init_from={workdir} has no checkpoint')
    return reader.item_metadata(reader.latest_step())['params']['wte']['embedding'].shape[0]
  finally:
    reader.close()


# --- The run ----------------------------------------------------------------------------------

RESUME_DIR = 'resume'  # WORKDIR/resume/<step>/: the latest state, while the run is unfinished


def validate(config: ml_collections.ConfigDict) -> None:
  ft = config.finetune
  if not ft.task:
    raise UserError('finetune.task is empty; name a built-in task, a TFDS task or JSONL file(s)')
  checks = [
    ('lr', ft.lr > 0, 'must be > 0'),
    ('batch_size', ft.batch_size >= 1, 'must be >= 1'),
    ('eval_batch_size', ft.eval_batch_size >= 1, 'must be >= 1'),
    ('epochs', ft.epochs >= 1, 'must be >= 1'),
    ('lm_coef', ft.lm_coef >= 0, 'must be >= 0'),
    ('warmup_fraction', 0 <= ft.warmup_fraction <= 1, 'must be in [0, 1]'),
    ('head_dropout', 0 <= ft.head_dropout < 1, 'must be in [0, 1)'),
    ('model_dropout', ft.model_dropout < 1, "must be below 1 (-1 keeps the run's)"),
    ('num_labels', ft.num_labels >= 0, 'must be >= 0'),
    ('max_train_examples', ft.max_train_examples >= 0, 'must be >= 0'),
    ('grad_accum_steps', ft.get('grad_accum_steps', 1) >= 1, 'must be >= 1'),
    ('nonfinite', ft.get('nonfinite', 'stop') in ('stop', 'skip'), "must be 'stop' or 'skip'"),
  ]
  for field, ok, why in checks:
    if not ok:
      raise UserError(f'finetune.{field}={ft[field]!r} {why}')
  n_devices, n_processes = jax.device_count(), jax.process_count()
  if any(size % n_devices or size % n_processes for size in (ft.batch_size, ft.eval_batch_size)):
    raise UserError(
      f'finetune.batch_size={ft.batch_size} and eval_batch_size={ft.eval_batch_size} '
      f'must be divisible by the {n_devices} devices and the {n_processes} processes'
    )
  accum = ft.get('grad_accum_steps', 1)
  if ft.batch_size % (accum * n_devices):
    raise UserError(
      f'finetune.batch_size={ft.batch_size} must be divisible by grad_accum_steps='
      f'{accum} times the {n_devices} devices'
    )


def _start_model(config: ml_collections.ConfigDict, workdir: str, train_texts: list[str]):
  """(tokenizer, model config, the model's parameters or None for a random init) the run starts
  from."""
  ft = config.finetune
  if ft.init_from and not ft.random_init:
    _, tokenizer, model_config, params = load_pretrained(ft.init_from, config.seed)
    return tokenizer, model_config, params
  if ft.init_from:  # the same model and tokenizer, but not the pre-trained weights
    run_config, tokenizer = read_run(ft.init_from)
    return tokenizer, configuration.model_config(run_config, tokenizer.vocab_size), None
  # No pre-training run: this config's model; its tokenizer (if it needs training) learns from
  # the task's training texts, on process 0, which saves it for the others to load.
  kind, vocab_size = config.tokenizer.kind, config.tokenizer.vocab_size
  if jax.process_index() == 0:
    tokenizer = tokenizer_lib.load_or_train(kind, vocab_size, workdir, train_texts)
  multihost_utils.sync_global_devices('finetune: tokenizer saved')
  if jax.process_index() != 0:
    tokenizer = tokenizer_lib.load_or_train(kind, vocab_size, workdir)
  return tokenizer, configuration.model_config(config, tokenizer.vocab_size), None


def _texts(kind: str, examples: list[dict]) -> list[str]:
  fields = [f for f, t in tasks.KINDS[kind].items() if t is str]
  texts = [e[f] for e in examples for f in fields]
  return texts + [c for e in examples for c in e.get('choices', [])]


def finetune(config: ml_collections.ConfigDict, workdir: str, show_progress: bool = True) -> dict:
  """Fine-tunes as config.finetune says, keeps the best checkpoint in `workdir`, and returns the
  results (also written to WORKDIR/results.json). A workdir holding an unfinished fine-tuning run
  of the same config is resumed from WORKDIR/resume; a finished one returns its results.

  With several JAX processes every one calls this; each feeds its share of every batch, and only
  process 0 writes files and prints.
  """
  ft = config.finetune
  is_chief = jax.process_index() == 0
  validate(config)
  if ft.init_from and os.path.realpath(ft.init_from) == os.path.realpath(workdir):
    raise UserError('--workdir is finetune.init_from; fine-tune into a new workdir')
  resuming = os.path.exists(os.path.join(workdir, 'config.json'))
  if resuming:
    if not os.path.exists(os.path.join(workdir, 'finetune.json')):
      raise UserError(f'{workdir} holds a run other than fine-tuning; use a new workdir')
    workdir_lib.check_config(config, workdir)  # a changed model, task or schedule is refused
    finished = _read_results(workdir)
    if finished is not None:
      return finished
  # A missing run, or one fine-tuning cannot start from, is reported before anything is written.
  if ft.init_from:
    run_config, _ = read_run(ft.init_from)
    where = f'finetune.init_from={ft.init_from}'
  else:
    run_config, where = config, 'model.architecture'
  backbone = backbones.get(run_config.model.get('architecture', 'gpt'), where)
  if ft.lm_coef and not backbone.lm_loss:
    raise UserError(
      f'finetune.lm_coef={ft.lm_coef}, but fine-tuning a model.architecture='
      f'{backbone.architecture} model has no auxiliary LM loss (L1 is the next-token loss of a '
      'left-to-right decoder); set --config.finetune.lm_coef=0'
    )
  task = tasks.load_task(ft.task, config.seed, ft.num_labels, ft.tfds_data_dir)
  if task.kind not in FINETUNE_KINDS:
    raise UserError(
      f'task {task.name} is a {task.kind} task; fine-tuning needs one of '
      f'{", ".join(FINETUNE_KINDS)}'
    )
  train_examples, val_examples = task.split('train'), task.split('validation')
  if ft.max_train_examples:
    train_examples = train_examples[: ft.max_train_examples]
  multihost_utils.sync_global_devices('finetune: workdir checked')  # before process 0 writes to it
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.lock(workdir) if is_chief else None
  writer = None
  try:
    tokenizer, model_config, model_params = _start_model(
      config, workdir, _texts(task.kind, train_examples)
    )
    markers = backbone.markers(tokenizer)  # checked, for a tokenizer trained just now
    backbone.check(model_config, task.kind)
    if ft.model_dropout >= 0:
      model_config = dataclasses.replace(
        model_config, embd_dropout=ft.model_dropout, resid_dropout=ft.model_dropout
      )
    model = registry.build(model_config, tokenizer.pad_id)
    finetuner = Finetuner(model, task.kind, task.num_labels, ft.head_dropout)
    splits = {'train': train_examples, 'validation': val_examples}
    if 'test' in task.splits:
      splits['test'] = task.splits['test']
    encoded = {
      name: task_inputs.encode_split(tokenizer, task.kind, examples, model_config.n_ctx, markers)
      for name, examples in splits.items()
    }
    n_rows = max(e.ids_NxRxL.shape[1] for e in encoded.values())
    longest = max(e.ids_NxRxL.shape[2] for e in encoded.values())
    seq_len = min(model_config.n_ctx, -(-longest // 8) * 8)
    encoded = {
      name: task_inputs.pad_to(e, n_rows, seq_len, tokenizer.pad_id) for name, e in encoded.items()
    }
    if is_chief and not resuming:
      _write_run_files(config, workdir, tokenizer, model_config, task, seq_len)
    writer = MetricsWriter(workdir, enabled=is_chief)
    results = _train(
      config, workdir, finetuner, model_params, encoded, writer, show_progress and is_chief
    )
  finally:
    if writer is not None:
      writer.close()
    if lock is not None:
      lock.close()
  results.update(
    task=task.name,
    kind=task.kind,
    n_train=len(train_examples),
    n_validation=len(val_examples),
    init_from=ft.init_from,
    random_init=ft.random_init,
    lm_coef=ft.lm_coef,
  )
  if is_chief:
    write_atomic(os.path.join(workdir, 'results.json'), json.dumps(results, indent=1))
    shutil.rmtree(os.path.join(workdir, RESUME_DIR), ignore_errors=True)  # finished: not needed
  return results


def _read_results(workdir: str) -> dict | None:
  """WORKDIR/results.json of a finished run, or None while the run is unfinished."""
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_run_files(config, workdir, tokenizer, model_config, task, seq_len) -> None:
  if tokenizer.kind != 'byte':  # the byte tokenizer has no file
    tokenizer_lib.save(tokenizer, workdir)
  with open(os.path.join(workdir, 'finetune.json'), 'w') as f:
    json.dump(
      {
        'model': dataclasses.asdict(model_config),
        'tokenizer': {'kind': tokenizer.kind, 'vocab_size': tokenizer.vocab_size},
        'task': {'name': task.name, 'kind': task.kind, 'num_labels': task.num_labels},
        'head_dropout': config.finetune.head_dropout,
        'seq_len': seq_len,
      },
      f,
      indent=1,
    )
  workdir_lib.save_config(config, workdir)  # last: a workdir with config.json holds a run


def train_config(
  ft: ml_collections.ConfigDict, steps_per_epoch: int, seq_len: int
) -> ml_collections.ConfigDict:
  """config.finetune as the train section that the shared optimizer, step and loop read: AdamW
  with linear warmup over warmup_fraction of the steps, then linear decay to 0 at the last step."""
  steps = ft.epochs * steps_per_epoch
  return ml_collections.ConfigDict(
    {
      'lr': ft.lr,
      'b1': ft.b1,
      'b2': ft.b2,
      'eps': ft.eps,
      'weight_decay': ft.weight_decay,
      'grad_clip': ft.grad_clip,
      'schedule': 'linear',
      'min_lr_ratio': 0.0,
      'steps': steps,
      'warmup_steps': max(1, round(ft.warmup_fraction * steps)),
      'global_batch_size': ft.batch_size,
      'grad_accum_steps': ft.get('grad_accum_steps', 1),
      'seq_len': seq_len,
      'sharding': 'replicate',
      'nonfinite': ft.get('nonfinite', 'stop'),
      'preemption_grace_s': ft.get('preemption_grace_s', 120.0),
    }
  )


def _train(
  config,
  workdir,
  finetuner: Finetuner,
  model_params,
  encoded: dict[str, Encoded],
  writer: MetricsWriter,
  show_progress: bool,
) -> dict:
  """Epochs of the training split through the shared step and loop (gptjax.training), keeping
  the checkpoint of the best validation accuracy; its test accuracy where there is a test split."""
  ft = config.finetune
  n_train = len(encoded['train'].labels_N)
  steps_per_epoch = math.ceil(n_train / ft.batch_size)
  train = train_config(ft, steps_per_epoch, encoded['train'].ids_NxRxL.shape[2])
  # The shared weight_decay_mask (Dense kernels) is the mask fine-tuning had of its own (matrices
  # other than the embedding tables) on these unscanned models and the head.
  optimizer = make_optimizer(train)
  mesh = sharding.make_mesh()
  init_rng, head_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)

  def init() -> TrainState:
    params = finetuner.init_params(init_rng, head_rng, model_params)
    return TrainState(
      step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params), rng=dropout_rng
    )

  abstract = jax.eval_shape(init)
  state_shardings = sharding.state_shardings(abstract, mesh, fsdp=False)
  finetune_objective = make_objective(finetuner, ft.lm_coef)
  first = task_inputs.batch_at(
    encoded['train'], ft.batch_size, np.arange(n_train), 0
  )  # the global shapes
  metric_names = ('task_loss', 'lm_loss') if finetuner.backbone.lm_loss else ('task_loss',)
  train_step = step_lib.compile_train_step(
    finetuner.model,
    finetune_objective,
    optimizer,
    ml_collections.ConfigDict({'train': train}),
    mesh,
    abstract,
    state_shardings,
    batch_abstract=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), first),
    deterministic=False,
    metric_names=metric_names,
  )
  # Replicated sums over the global batch: every process reads the same counts.
  eval_step = jax.jit(
    step_lib.make_eval_step(finetune_objective, config.seed),
    in_shardings=(state_shardings.params, sharding.batch_sharding(mesh)),
    out_shardings=sharding.replicated(mesh),
  )

  def global_batch(rows: dict, batch_size: int) -> dict:
    """One global batch from each process's rows."""
    return {key: sharding.global_batch(rows_B, mesh, batch_size) for key, rows_B in rows.items()}

  orders: dict[int, np.ndarray] = {}

  def batch(step: int) -> dict:
    """Epoch e (from 1) takes the training split in the order rng([seed, e]).permutation."""
    epoch, index = divmod(step, steps_per_epoch)
    if epoch + 1 not in orders:
      orders.clear()
      orders[epoch + 1] = np.random.default_rng([config.seed, epoch + 1]).permutation(n_train)
    return global_batch(
      task_inputs.batch_at(
        encoded['train'],
        ft.batch_size,
        orders[epoch + 1],
        index,
        jax.process_index(),
        jax.process_count(),
      ),
      ft.batch_size,
    )

  def accuracy(params, split: str) -> float:
    # Padding rows weigh 0, so each example counts once whatever the processes and devices.
    correct = sum(
      float(eval_step(params, global_batch(rows, ft.eval_batch_size))['correct'])
      for rows in task_inputs.batches(
        encoded[split], ft.eval_batch_size, None, jax.process_index(), jax.process_count()
      )
    )
    return correct / len(encoded[split].labels_N)

  mngr = checkpoint.manager(workdir, keep=1)  # saved only on improvement: the kept one is the best
  resume = checkpoint.manager(workdir, keep=1, subdir=RESUME_DIR)  # the latest state
  best = {}

  def save(state: TrainState, metrics: dict) -> None:
    """At the end of an epoch (where the loop has just evaluated), a new best is saved; then, as
    on SIGTERM, the state to resume from."""
    if metrics.get('validation_accuracy', -1.0) > best['validation_accuracy']:
      if int(state.step) in mngr.all_steps():  # saved before an interruption, now bettered
        mngr.delete(int(state.step))
      checkpoint.save(mngr, state)  # a collective: every process saves
      best.update(
        validation_accuracy=metrics['validation_accuracy'],
        best_epoch=metrics['epoch'],
        best_step=int(state.step),
      )
    checkpoint.save(resume, state)

  loop = trainer.Loop(
    train_step=train_step,
    batch=batch,
    evaluate=lambda state, final: {
      'epoch': int(state.step) // steps_per_epoch,
      'validation_accuracy': accuracy(state.params, 'validation'),
    },
    save=save,
    steps=train.steps,
    log_every=steps_per_epoch,
    eval_every=steps_per_epoch,
    checkpoint_every=steps_per_epoch,
    nonfinite=train.nonfinite,
    nonfinite_field='finetune.nonfinite',
    schedule=learning_rate_schedule(train),
    seconds=collections.Counter(),
    describe=lambda step, m: (
      f'epoch {m["epoch"]}: train loss {m["train_loss"]:.4f} (task {m["train_task_loss"]:.4f}'
      + (f', LM {m["train_lm_loss"]:.4f}' if 'train_lm_loss' in m else '')
      + f'), validation accuracy {m["validation_accuracy"]:.4f}'
    ),
    eval_in_train_row=True,
    desc='finetune',
  )  # one metrics.jsonl row per epoch
  preemption = trainer.Preemption(train.preemption_grace_s)
  start = time.perf_counter()
  try:
    best.update(_best_so_far(workdir, mngr))
    state = checkpoint.restore_latest(resume, abstract, state_shardings)
    if state is None:
      state = jax.jit(init, out_shardings=state_shardings)()
    try:
      state, _ = trainer.train_loop(loop, state, writer, preemption, show_progress)
    except Preempted:
      raise Preempted(
        f'stopped by SIGTERM; {workdir}/checkpoints holds the best checkpoint so far '
        f'({best.get("best_step", "none")}); run the same command to continue'
      ) from None
    results = {**best, 'steps': train.steps, 'wall_s': time.perf_counter() - start}
    if 'test' in encoded:
      state = checkpoint.restore_latest(mngr, abstract, state_shardings)
      results['test_accuracy'] = accuracy(state.params, 'test')
      results['n_test'] = len(encoded['test'].labels_N)
    return results
  finally:
    preemption.close()
    checkpoint.close(resume)
    checkpoint.close(mngr)


def _best_so_far(workdir: str, mngr) -> dict:
  """The best checkpoint's validation accuracy, epoch and step, from its row of metrics.jsonl
  (written before it was saved); validation accuracy -1 where there is none yet."""
  step = mngr.latest_step()
  rows = [r for r in read_metrics(workdir, step) if r['step'] == step] if step is not None else []
  if not rows or 'validation_accuracy' not in rows[-1]:
    return {'validation_accuracy': -1.0}
  return {
    'validation_accuracy': rows[-1]['validation_accuracy'],
    'best_epoch': rows[-1]['epoch'],
    'best_step': step,
  }


@dataclasses.dataclass(frozen=True)
class FinetunedRun:
  tokenizer: tokenizer_lib.Tokenizer
  finetuner: Finetuner
  params: dict
  seq_len: int  # the padded length of the run's inputs


def load_finetuned(workdir: str) -> FinetunedRun:
  """The best checkpoint of the fine-tuning run in `workdir`, ready for predict()."""
  path = os.path.join(workdir, 'finetune.json')
  if not os.path.isfile(path):
    raise UserError(f'{workdir} holds no fine-tuning run (no finetune.json)')
  with open(path) as f:
    saved = json.load(f)
  tokenizer = tokenizer_lib.load_or_train(
    saved['tokenizer']['kind'], saved['tokenizer']['vocab_size'], workdir
  )
  task = saved['task']
  model = registry.build(ModelConfig(**saved['model']), tokenizer.pad_id)
  finetuner = Finetuner(model, task['kind'], task['num_labels'], saved['head_dropout'])
  abstract = jax.eval_shape(
    lambda: finetuner.init_params(jax.random.PRNGKey(0), jax.random.PRNGKey(0))
  )  # the saved parameters' shapes
  params = state_lib.restore_params(workdir, abstract)  # no optimizer state
  return FinetunedRun(tokenizer, finetuner, params, saved['seq_len'])


def predict(run: FinetunedRun, examples: list[dict], batch_size: int = 32) -> np.ndarray:
  """The predicted label (or choice) of each example."""
  finetuner = run.finetuner
  markers = finetuner.backbone.markers(run.tokenizer)
  encoded = task_inputs.encode_split(
    run.tokenizer, finetuner.kind, examples, finetuner.model.config.n_ctx, markers
  )
  apply = jax.jit(
    lambda p, ids, lengths, segments: jnp.argmax(
      finetuner.apply(p, ids, lengths, segments_BxRxL=segments)[0], -1
    )
  )
  return np.concatenate(
    [
      np.asarray(apply(run.params, b['ids'], b['lengths'], b['segments']))
      for b in task_inputs.batches(encoded, batch_size)
    ]
  )[: len(examples)]
