"""Supervised fine-tuning of a pre-trained GPT, as GPT-1 does it (Radford et al. 2018, 3.2-3.3).

  python -m gptjax.finetune --config configs/finetune.py --workdir runs/ft_next_line \\
      --config.finetune.init_from=runs/default --config.finetune.task=stdlib_next_line

Input transformations: each example becomes token sequences for the decoder, with the tokenizer's
reserved START, DELIM and EXTRACT tokens:
  classification   START text EXTRACT
  entailment       START premise DELIM hypothesis EXTRACT
  similarity       START a DELIM b EXTRACT  and  START b DELIM a EXTRACT (both orders: the task
                   has none); the two final hidden states at EXTRACT are added
  multiple choice  START context DELIM choice_k EXTRACT for each k
A sequence longer than the context is cut away from the delimiter: the first segment loses its
start and the second its end, the second keeping at least half the room when it needs it.

A linear head reads the final hidden state at EXTRACT (after dropout): class logits, or one score
per choice with a softmax over the choices. The objective is L3 = L2 + lm_coef * L1: L2 the task's
cross-entropy, L1 the mean next-token cross-entropy over every token of the same input sequences.

The run starts from a pre-training workdir (finetune.init_from) and writes only into its own new
workdir: config.json, finetune.json (what load_finetuned needs), the tokenizer, metrics.jsonl,
checkpoints/<step>/ holding only the best checkpoint by validation accuracy, and results.json.
"""
import dataclasses
import json
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from gptjax import cli, configuration
from gptjax.cli import fail, parse_flags, reported
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.downstream import tasks
from gptjax.errors import UserError
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.training import checkpoint, sharding
from gptjax.training import workdir as workdir_lib
from gptjax.training.metrics import MetricsWriter
from gptjax.training.optimizer import make_optimizer as make_pretrain_optimizer
from gptjax.training.state import TrainState, init_state

FINETUNE_KINDS = ('classification', 'entailment', 'similarity', 'multiple_choice')


# --- Input transformations --------------------------------------------------------------------


def transform(tokenizer: tokenizer_lib.Tokenizer, kind: str, example: dict,
              max_len: int) -> list[list[int]]:
  """The token sequences of one example (one per row: 1, 2 for similarity, or one per choice)."""
  if kind == 'classification':
    pairs = [(example['text'], None)]
  elif kind == 'entailment':
    pairs = [(example['premise'], example['hypothesis'])]
  elif kind == 'similarity':
    pairs = [(example['a'], example['b']), (example['b'], example['a'])]
  elif kind == 'multiple_choice':
    pairs = [(example['context'], choice) for choice in example['choices']]
  else:
    raise UserError(f'{kind} tasks cannot be fine-tuned; use {", ".join(FINETUNE_KINDS)} '
                    '(evaluate cloze tasks with python -m gptjax.evaluate)')
  sequences = []
  for first, second in pairs:
    first_ids = tokenizer.encode(first)
    second_ids = [] if second is None else tokenizer.encode(second)
    room = max_len - (2 if second is None else 3)  # beside START, (DELIM,) EXTRACT
    if len(first_ids) + len(second_ids) > room:
      # Cut away from the delimiter: the first segment loses its start, the second its end, and
      # the second keeps at least half the room when it needs that much.
      keep_second = min(len(second_ids), max(room - len(first_ids), room // 2))
      second_ids = second_ids[:keep_second]
      first_ids = first_ids[len(first_ids) - (room - keep_second):]
    tail = [] if second is None else [tokenizer.delim_id, *second_ids]
    sequences.append([tokenizer.start_id, *first_ids, *tail, tokenizer.extract_id])
  return sequences


@dataclasses.dataclass
class Encoded:
  """A split as arrays: N examples, R rows each, L positions."""
  ids_NxRxL: np.ndarray  # int32, padded with PAD
  lengths_NxR: np.ndarray  # int32 tokens of each row; 0 for a multiple-choice example's missing choice
  labels_N: np.ndarray  # int32


def encode_split(tokenizer: tokenizer_lib.Tokenizer, kind: str, examples: list[dict],
                 max_len: int) -> Encoded:
  rows = [transform(tokenizer, kind, example, max_len) for example in examples]
  n_rows = max(len(r) for r in rows)
  seq_len = max(len(s) for r in rows for s in r)
  ids = np.full((len(rows), n_rows, seq_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(rows), n_rows), np.int32)
  for i, example_rows in enumerate(rows):
    for r, sequence in enumerate(example_rows):
      ids[i, r, :len(sequence)] = sequence
      lengths[i, r] = len(sequence)
  return Encoded(ids, lengths, np.array([e['label'] for e in examples], np.int32))


def pad_to(encoded: Encoded, n_rows: int, seq_len: int, pad_id: int) -> Encoded:
  """The same examples in (N, n_rows, seq_len): one shape for every split, so one compilation."""
  n, r, l = encoded.ids_NxRxL.shape
  ids = np.full((n, n_rows, seq_len), pad_id, np.int32)
  ids[:, :r, :l] = encoded.ids_NxRxL
  lengths = np.zeros((n, n_rows), np.int32)
  lengths[:, :r] = encoded.lengths_NxR
  return Encoded(ids, lengths, encoded.labels_N)


# --- Model and objective ----------------------------------------------------------------------


class TaskHead(nn.Module):
  """Dropout, then a linear map of the hidden state at EXTRACT to num_outputs scores."""
  num_outputs: int
  dropout: float

  @nn.compact
  def __call__(self, h_BxD: jax.Array, deterministic: bool) -> jax.Array:
    h_BxD = nn.Dropout(self.dropout)(h_BxD, deterministic=deterministic)
    return nn.Dense(self.num_outputs, kernel_init=nn.initializers.normal(0.02), name='linear')(h_BxD)


@dataclasses.dataclass(frozen=True)
class Finetuner:
  """The pre-trained GPT and a task head; parameters are {'gpt': ..., 'head': ...}."""
  gpt: GPT
  kind: str
  num_labels: int  # classes; unused for multiple choice (one score per choice)
  head_dropout: float

  @property
  def head(self) -> TaskHead:
    return TaskHead(1 if self.kind == 'multiple_choice' else self.num_labels, self.head_dropout)

  def init_head(self, rng: jax.Array) -> dict:
    return self.head.init(rng, jnp.zeros((1, self.gpt.config.d_model)), deterministic=True)['params']

  def apply(self, params: dict, ids_BxRxL: jax.Array, lengths_BxR: jax.Array,
            deterministic: bool = True, rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(task scores (B, K): class logits or per-choice scores, LM logits (B, R, L, V))."""
    batch, n_rows, seq_len = ids_BxRxL.shape
    gpt_rng, head_rng = jax.random.split(rng) if rng is not None else (None, None)
    logits_NxLxV, hidden_NxLxD = self.gpt.apply(
        {'params': params['gpt']}, ids_BxRxL.reshape(batch * n_rows, seq_len),
        deterministic=deterministic, rngs=None if deterministic else {'dropout': gpt_rng},
        return_hidden=True)
    extract_N = jnp.maximum(lengths_BxR.reshape(-1) - 1, 0)  # the last token is EXTRACT
    h_BxRxD = hidden_NxLxD[jnp.arange(batch * n_rows), extract_N].reshape(batch, n_rows, -1)
    head = lambda h: self.head.apply({'params': params['head']}, h, deterministic=deterministic,
                                     rngs=None if deterministic else {'dropout': head_rng})
    if self.kind == 'multiple_choice':
      scores_BxR = head(h_BxRxD)[..., 0]
      scores_BxK = jnp.where(lengths_BxR > 0, scores_BxR, -1e9)  # padding choices never win
    elif self.kind == 'similarity':
      scores_BxK = head(h_BxRxD.sum(axis=1))
    else:
      scores_BxK = head(h_BxRxD[:, 0])
    return scores_BxK, logits_NxLxV.reshape(batch, n_rows, seq_len, -1)


def objective(scores_BxK: jax.Array, logits_BxRxLxV: jax.Array, batch: dict,
              lm_coef: float) -> tuple[jax.Array, dict]:
  """L3 = L2 + lm_coef * L1 over the examples with weight 1 (padding rows of a batch weigh 0).

  L2: mean cross-entropy of the task scores. L1: mean next-token cross-entropy over every
  token after the first of each real row (markers included), as in GPT-1's code.
  """
  weights_B = batch['weights']
  task_B = optax.softmax_cross_entropy_with_integer_labels(scores_BxK, batch['labels'])
  task_loss = jnp.sum(task_B * weights_B) / jnp.maximum(weights_B.sum(), 1)
  ids_BxRxL, lengths_BxR = batch['ids'], batch['lengths']
  token_BxRxL1 = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxRxLxV[:, :, :-1], ids_BxRxL[:, :, 1:])
  positions_L1 = jnp.arange(ids_BxRxL.shape[2] - 1)
  mask_BxRxL1 = ((positions_L1 + 1 < lengths_BxR[..., None]) & (weights_B[:, None, None] > 0))
  lm_loss = jnp.sum(token_BxRxL1 * mask_BxRxL1) / jnp.maximum(mask_BxRxL1.sum(), 1)
  correct_B = (jnp.argmax(scores_BxK, axis=-1) == batch['labels']) * weights_B
  return task_loss + lm_coef * lm_loss, {'task_loss': task_loss, 'lm_loss': lm_loss,
                                         'correct': correct_B.sum()}


def _weight_decay_mask(params: dict) -> dict:
  """Decay matrices that multiply activations: not biases, LayerNorm or the embedding tables."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf.ndim >= 2 and not {'wte', 'wpe'} & {k.key for k in path}, params)


def make_optimizer(ft: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """AdamW; the learning rate rises linearly over warmup_fraction of the steps, then falls
  linearly to 0 at the last step."""
  warmup = max(1, round(ft.warmup_fraction * total_steps))
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, ft.lr, warmup),
       optax.linear_schedule(ft.lr, 0.0, max(1, total_steps - warmup))], [warmup])
  adamw = optax.adamw(schedule, b1=ft.b1, b2=ft.b2, eps=ft.eps, weight_decay=ft.weight_decay,
                      mask=_weight_decay_mask)
  return optax.chain(optax.clip_by_global_norm(ft.grad_clip), adamw) if ft.grad_clip > 0 else adamw


def make_train_step(finetuner: Finetuner, optimizer: optax.GradientTransformation, lm_coef: float):
  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    def loss_fn(params):
      scores_BxK, logits_BxRxLxV = finetuner.apply(params, batch['ids'], batch['lengths'],
                                                   deterministic=False, rng=rng)
      return objective(scores_BxK, logits_BxRxLxV, batch, lm_coef)
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': loss, **parts}
  return train_step


def make_eval_step(finetuner: Finetuner):
  def eval_step(params: dict, batch: dict) -> dict:
    scores_BxK, logits_BxRxLxV = finetuner.apply(params, batch['ids'], batch['lengths'])
    return objective(scores_BxK, logits_BxRxLxV, batch, 0.0)[1]
  return eval_step


def batches(encoded: Encoded, batch_size: int, order: np.ndarray | None = None,
            process_index: int = 0, process_count: int = 1):
  """Batches of batch_size examples in `order` (default: as stored); the last one is filled up
  with copies of the first example at weight 0, so every batch has one shape. Of each batch,
  process p of P gets only its share: rows p*n/P .. (p+1)*n/P (what sharding.global_batch takes)."""
  order = np.arange(len(encoded.labels_N)) if order is None else order
  share = batch_size // process_count
  rows = slice(process_index * share, (process_index + 1) * share)
  for start in range(0, len(order), batch_size):
    index = order[start:start + batch_size]
    weights = np.zeros(batch_size, np.float32)
    weights[:len(index)] = 1
    index = np.concatenate([index, np.full(batch_size - len(index), order[0])])[rows]
    yield {'ids': encoded.ids_NxRxL[index], 'lengths': encoded.lengths_NxR[index],
           'labels': encoded.labels_N[index], 'weights': weights[rows]}


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
  params = {**params, 'wte': {'embedding': jnp.concatenate(
      [table_VxD, new_rows(wte_rng, table_VxD.shape[1])])}}
  if 'lm_head' in params:
    kernel_DxV = params['lm_head']['kernel']
    params['lm_head'] = {'kernel': jnp.concatenate([kernel_DxV, new_rows(head_rng, kernel_DxV.shape[0]).T],
                                                   axis=1)}
  return params


def load_pretrained(workdir: str, seed: int) -> tuple[ml_collections.ConfigDict,
                                                      tokenizer_lib.Tokenizer, ModelConfig, dict]:
  """(run config, tokenizer, model config, parameters) of the pre-training run in `workdir`'s
  latest checkpoint, the embedding table extended to the tokenizer's vocabulary if it is shorter."""
  run_config, tokenizer = read_run(workdir)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):  # before manager() creates it
    raise UserError(f'finetune.init_from={workdir} has no checkpoints/')
  mngr = checkpoint.manager(workdir, run_config.train.keep_checkpoints)
  try:
    if mngr.latest_step() is None:
      raise UserError(f'finetune.init_from={workdir} has no checkpoint')
    rows = _embedding_rows(mngr)
    model_config = configuration.model_config(run_config, rows)
    optimizer = make_pretrain_optimizer(run_config.train)
    abstract = jax.eval_shape(lambda: init_state(GPT(model_config), optimizer, run_config.seed))
    shardings = sharding.state_shardings(abstract, sharding.make_mesh(), fsdp=False)
    state = checkpoint.restore_latest(mngr, abstract, shardings)
  finally:
    mngr.close()
  params = extend_vocab(state.params, tokenizer.vocab_size, jax.random.PRNGKey(seed))
  return run_config, tokenizer, dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size), params


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, tokenizer_lib.Tokenizer]:
  """The config and tokenizer of the pre-training run in `workdir`."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise UserError(f'finetune.init_from={workdir} holds no pre-training run (no config.json)')
  with open(path) as f:
    run_config = ml_collections.ConfigDict(json.load(f))
  architecture = run_config.model.get('architecture', 'gpt')
  if architecture != 'gpt':
    raise UserError(f'finetune.init_from={workdir} holds a model.architecture={architecture} run; '
                    'GPT-1 fine-tuning needs a GPT')
  return run_config, tokenizer_lib.load_or_train(run_config.tokenizer.kind,
                                                 run_config.tokenizer.vocab_size, workdir)


def _embedding_rows(mngr) -> int:
  """Rows of the token embedding table in the latest checkpoint, from its metadata."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  reader = ocp.CheckpointManager(mngr.directory, item_handlers=ocp.StandardCheckpointHandler(),
                                 options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return reader.item_metadata(mngr.latest_step())['params']['wte']['embedding'].shape[0]
  finally:
    reader.close()


# --- The run ----------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  ft = config.finetune
  if not ft.task:
    raise UserError('finetune.task is empty; name a built-in task, a TFDS task or JSONL file(s)')
  checks = [('lr', ft.lr > 0, 'must be > 0'), ('batch_size', ft.batch_size >= 1, 'must be >= 1'),
            ('eval_batch_size', ft.eval_batch_size >= 1, 'must be >= 1'),
            ('epochs', ft.epochs >= 1, 'must be >= 1'), ('lm_coef', ft.lm_coef >= 0, 'must be >= 0'),
            ('warmup_fraction', 0 <= ft.warmup_fraction <= 1, 'must be in [0, 1]'),
            ('head_dropout', 0 <= ft.head_dropout < 1, 'must be in [0, 1)'),
            ('model_dropout', ft.model_dropout < 1, 'must be below 1 (-1 keeps the run\'s)'),
            ('num_labels', ft.num_labels >= 0, 'must be >= 0'),
            ('max_train_examples', ft.max_train_examples >= 0, 'must be >= 0')]
  for field, ok, why in checks:
    if not ok:
      raise UserError(f'finetune.{field}={ft[field]!r} {why}')
  n_devices, n_processes = jax.device_count(), jax.process_count()
  if any(size % n_devices or size % n_processes for size in (ft.batch_size, ft.eval_batch_size)):
    raise UserError(f'finetune.batch_size={ft.batch_size} and eval_batch_size={ft.eval_batch_size} '
                    f'must be divisible by the {n_devices} devices and the {n_processes} processes')


def _start_model(config: ml_collections.ConfigDict, workdir: str, train_texts: list[str]):
  """(tokenizer, model config, GPT parameters or None for a random init) the run starts from."""
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
  """Fine-tunes as config.finetune says, keeps the best checkpoint in the new `workdir`, and
  returns the results (also written to WORKDIR/results.json).

  With several JAX processes every one calls this; each feeds its share of every batch, and only
  process 0 writes files and prints.
  """
  ft = config.finetune
  is_chief = jax.process_index() == 0
  validate(config)
  if ft.init_from and os.path.realpath(ft.init_from) == os.path.realpath(workdir):
    raise UserError('--workdir is finetune.init_from; fine-tune into a new workdir')
  if os.path.exists(os.path.join(workdir, 'config.json')):
    raise UserError(f'{workdir} already holds a run; fine-tune into a new workdir')
  if ft.init_from:
    read_run(ft.init_from)  # a missing run is reported before anything is written
  task = tasks.load_task(ft.task, config.seed, ft.num_labels, ft.tfds_data_dir)
  if task.kind not in FINETUNE_KINDS:
    raise UserError(f'task {task.name} is a {task.kind} task; fine-tuning needs one of '
                    f'{", ".join(FINETUNE_KINDS)}')
  train_examples, val_examples = task.split('train'), task.split('validation')
  if ft.max_train_examples:
    train_examples = train_examples[:ft.max_train_examples]
  multihost_utils.sync_global_devices('finetune: workdir checked')  # before process 0 writes to it
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.lock(workdir) if is_chief else None
  writer = None
  try:
    tokenizer, model_config, gpt_params = _start_model(config, workdir, _texts(task.kind, train_examples))
    if ft.model_dropout >= 0:
      model_config = dataclasses.replace(model_config, embd_dropout=ft.model_dropout,
                                         resid_dropout=ft.model_dropout)
    finetuner = Finetuner(GPT(model_config), task.kind, task.num_labels, ft.head_dropout)
    splits = {'train': train_examples, 'validation': val_examples}
    if 'test' in task.splits:
      splits['test'] = task.splits['test']
    encoded = {name: encode_split(tokenizer, task.kind, examples, model_config.n_ctx)
               for name, examples in splits.items()}
    n_rows = max(e.ids_NxRxL.shape[1] for e in encoded.values())
    seq_len = min(model_config.n_ctx, -(-max(e.ids_NxRxL.shape[2] for e in encoded.values()) // 8) * 8)
    encoded = {name: pad_to(e, n_rows, seq_len, tokenizer.pad_id) for name, e in encoded.items()}
    if is_chief:
      _write_run_files(config, workdir, tokenizer, model_config, task, seq_len)
    writer = MetricsWriter(workdir, enabled=is_chief)
    results = _train(config, workdir, finetuner, gpt_params, encoded, writer,
                     show_progress and is_chief)
  finally:
    if writer is not None:
      writer.close()
    if lock is not None:
      lock.close()
  results.update(task=task.name, kind=task.kind, n_train=len(train_examples),
                 n_validation=len(val_examples), init_from=ft.init_from, random_init=ft.random_init,
                 lm_coef=ft.lm_coef)
  if is_chief:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results


def _write_run_files(config, workdir, tokenizer, model_config, task, seq_len) -> None:
  if tokenizer.kind != 'byte':  # the byte tokenizer has no file
    tokenizer_lib.save(tokenizer, workdir)
  with open(os.path.join(workdir, 'finetune.json'), 'w') as f:
    json.dump({'model': dataclasses.asdict(model_config),
               'tokenizer': {'kind': tokenizer.kind, 'vocab_size': tokenizer.vocab_size},
               'task': {'name': task.name, 'kind': task.kind, 'num_labels': task.num_labels},
               'head_dropout': config.finetune.head_dropout, 'seq_len': seq_len}, f, indent=1)
  workdir_lib.save_config(config, workdir)  # last: a workdir with config.json holds a run


def _train(config, workdir, finetuner: Finetuner, gpt_params, encoded: dict[str, Encoded],
           writer: MetricsWriter, show_progress: bool) -> dict:
  ft = config.finetune
  n_train = len(encoded['train'].labels_N)
  steps_per_epoch = math.ceil(n_train / ft.batch_size)
  total_steps = ft.epochs * steps_per_epoch
  optimizer = make_optimizer(ft, total_steps)
  mesh = sharding.make_mesh()
  init_rng, head_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)

  def init() -> TrainState:
    gpt = gpt_params if gpt_params is not None else finetuner.gpt.init(
        init_rng, jnp.zeros((1, finetuner.gpt.config.n_ctx), jnp.int32))['params']
    params = {'gpt': gpt, 'head': finetuner.init_head(head_rng)}
    return TrainState(step=jnp.array(0, jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=dropout_rng)

  abstract = jax.eval_shape(init)
  state_shardings = sharding.state_shardings(abstract, mesh, fsdp=False)
  state = jax.jit(init, out_shardings=state_shardings)()
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(make_train_step(finetuner, optimizer, ft.lm_coef),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
  # Replicated sums over the global batch: every process reads the same counts.
  eval_step = jax.jit(make_eval_step(finetuner), in_shardings=(state_shardings.params, batch_sharding),
                      out_shardings=sharding.replicated(mesh))

  def split_batches(split: str, batch_size: int, order: np.ndarray | None = None):
    """Global batches, each process feeding only its rows."""
    for rows in batches(encoded[split], batch_size, order, jax.process_index(), jax.process_count()):
      yield {key: sharding.global_batch(rows_B, mesh, batch_size) for key, rows_B in rows.items()}

  def accuracy(params, split: str) -> float:
    # Padding rows weigh 0, so each example counts once whatever the processes and devices.
    correct = sum(float(eval_step(params, b)['correct'])
                  for b in split_batches(split, ft.eval_batch_size))
    return correct / len(encoded[split].labels_N)

  mngr = checkpoint.manager(workdir, keep=1)  # saved only on improvement: the kept one is the best
  best = {'validation_accuracy': -1.0}
  progress = tqdm.tqdm(total=total_steps, desc='finetune', dynamic_ncols=True, disable=not show_progress)
  start = time.perf_counter()
  try:
    for epoch in range(1, ft.epochs + 1):
      order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
      sums = {'loss': 0.0, 'task_loss': 0.0, 'lm_loss': 0.0}
      for batch in split_batches('train', ft.batch_size, order):
        state, metrics = train_step(state, batch)
        for key in sums:
          sums[key] += float(metrics[key])
        progress.update(1)
        progress.set_postfix(loss=f'{float(metrics["loss"]):.3f}')
      step = int(state.step)
      row = {f'train_{k}': v / steps_per_epoch for k, v in sums.items()}
      row.update(epoch=epoch, validation_accuracy=accuracy(state.params, 'validation'))
      writer.write(step, row)
      if jax.process_index() == 0:
        progress.write(f'epoch {epoch}: train loss {row["train_loss"]:.4f} (task '
                       f'{row["train_task_loss"]:.4f}, LM {row["train_lm_loss"]:.4f}), validation '
                       f'accuracy {row["validation_accuracy"]:.4f}')
      if row['validation_accuracy'] > best['validation_accuracy']:
        checkpoint.save(mngr, state)  # a collective: every process saves
        best = {'validation_accuracy': row['validation_accuracy'], 'best_epoch': epoch,
                'best_step': step}
    progress.close()
    results = {**best, 'steps': total_steps, 'wall_s': time.perf_counter() - start}
    if 'test' in encoded:
      state = checkpoint.restore_latest(mngr, abstract, state_shardings)
      results['test_accuracy'] = accuracy(state.params, 'test')
      results['n_test'] = len(encoded['test'].labels_N)
    return results
  finally:
    mngr.close()


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
  with open(os.path.join(workdir, 'config.json')) as f:
    ft = ml_collections.ConfigDict(json.load(f)).finetune
  tokenizer = tokenizer_lib.load_or_train(saved['tokenizer']['kind'], saved['tokenizer']['vocab_size'],
                                          workdir)
  task = saved['task']
  finetuner = Finetuner(GPT(ModelConfig(**saved['model'])), task['kind'], task['num_labels'],
                        saved['head_dropout'])

  def init() -> TrainState:  # the saved state's shapes (the schedule's length does not change them)
    gpt = finetuner.gpt.init(jax.random.PRNGKey(0), jnp.zeros((1, finetuner.gpt.config.n_ctx), jnp.int32))
    params = {'gpt': gpt['params'], 'head': finetuner.init_head(jax.random.PRNGKey(0))}
    return TrainState(step=jnp.array(0, jnp.int32), params=params,
                      opt_state=make_optimizer(ft, 1).init(params), rng=jax.random.PRNGKey(0))

  abstract = jax.eval_shape(init)
  shardings = sharding.state_shardings(abstract, sharding.make_mesh(), fsdp=False)
  state = checkpoint.restore_run(workdir, abstract, shardings, keep=1)
  return FinetunedRun(tokenizer, finetuner, state.params, saved['seq_len'])


def predict(run: FinetunedRun, examples: list[dict], batch_size: int = 32) -> np.ndarray:
  """The predicted label (or choice) of each example."""
  encoded = encode_split(run.tokenizer, run.finetuner.kind, examples, run.finetuner.gpt.config.n_ctx)
  apply = jax.jit(lambda p, ids, lengths: jnp.argmax(run.finetuner.apply(p, ids, lengths)[0], -1))
  return np.concatenate([np.asarray(apply(run.params, b['ids'], b['lengths']))
                         for b in batches(encoded, batch_size)])[:len(examples)]


# --- Command line -----------------------------------------------------------------------------

def main() -> None:
  # Flags are defined here, not on import, so that this module can be imported beside other
  # command-line modules that define --config or --workdir.
  config_flag = config_flags.DEFINE_config_file('config', None, 'Path to a config file '
                                                '(configs/finetune.py).')
  workdir_flag = flags.DEFINE_string('workdir', None, 'A new directory for the fine-tuning run.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      fail(f'unexpected arguments: {" ".join(argv[1:])}', status=2)
    logging.set_verbosity(logging.WARNING)  # orbax logs every step of a save at INFO
    config = config_flag.value
    with reported(debug=cli.DEBUG.value):
      if 'distributed' in config and config.distributed.initialize:  # configs/finetune.py has none
        sharding.initialize_distributed(config.distributed)
      results = finetune(config, workdir_flag.value)
    if jax.process_index() == 0:
      print(json.dumps(results))

  app.run(run, flags_parser=lambda argv: parse_flags(argv, config_flag))
