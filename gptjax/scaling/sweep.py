"""Run a sweep: every point of experiments/X.py, each in its own workdir, the runs of one model
shape trained together as one stacked program (gptjax/training/stacked.py).

  python -m gptjax.sweep run experiments/kaplan_model_size.py --root runs/kaplan_model_size
  python -m gptjax.sweep run experiments/kaplan_model_size.py --root runs/kaplan_model_size --list

A sweep file defines get_config(), the base config (so it is also a config file for
python -m gptjax.main), and get_runs(), a list of (name, overrides): dotted config fields and their
values, as --config.a.b=v would set them. Each run trains in ROOT/<name>, alone with
gptjax.training.trainer.train_and_evaluate or stacked with the runs that differ from it only in
stacked.PER_RUN's fields (seed, learning-rate schedule, AdamW's betas, eps and decay, cadence), in
stacks of up to max_stack runs ordered by length; either way an interrupted run resumes from its
last checkpoint, and a run with a row in ROOT/results.jsonl for the same config is skipped. Each
finished run appends a row: name, N, N_total, D, C and its convention, losses, throughput, wall
time (its share of its stack's), stacked (the stack's size), diverged (where a non-finite step
retired it) and the config (less logging.*, where metrics went: it changes nothing measured).
With logging.wandb each run is a W&B run of its own, in the group named after ROOT (unless the
sweep sets logging.wandb_group).

The runs share one tokenizer and data cache, whatever the architecture: they are made once in
ROOT/_shared (from the base config, by the architecture's loader) and copied into each new
workdir, the cache's large files as hard links, unless a run changes a setting the cache depends
on (gptjax/data/cache.py says which), when it makes its own.
The runs also share XLA's persistent compilation cache, ROOT/_xla_cache.
The command line is gptjax/sweep.py; its --list prints one python -m gptjax.main command per run
instead, to fan the runs out elsewhere (each then makes its own tokenizer); running the sweep
afterwards on the same ROOT finds them finished and only evaluates them and writes the rows. Its
--launcher submitit trains each stack as a job on a SLURM cluster instead, in the same workdirs,
with the same rows (gptjax/scaling/cluster.py).
"""

import fcntl
import importlib.util
import json
import math
import os
import re
import shlex
import sys
import time
from typing import Any

import jax
import ml_collections

from gptjax import configuration
from gptjax.data import cache
from gptjax.errors import UserError, where_raised
from gptjax.models import accounting, registry
from gptjax.scaling import observations
from gptjax.training import metrics as metrics_lib
from gptjax.training import stacked, trainer

SHARED = '_shared'
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')


def schedule(steps: int, evaluations: int = 8) -> dict[str, int]:
  """Overrides that fit a run's schedule to its length, as Hoffmann et al. (2022) found one must:
  the cosine decays over exactly `steps` steps after a warmup of a tenth of them, and the run
  evaluates and checkpoints `evaluations` times (the points of its curve in the report)."""
  every = max(1, math.ceil(steps / evaluations))
  return {
    'train.steps': steps,
    'train.warmup_steps': max(1, steps // 10),
    'train.eval_every': every,
    'train.checkpoint_every': every,
    'train.log_every': max(1, min(25, every)),
  }


def load_sweep(path: str) -> tuple[ml_collections.ConfigDict, list[tuple[str, dict[str, Any]]]]:
  """(base config, [(name, overrides)]) of the sweep file at `path`, checked: unique names that
  can be directory names, overrides of fields the base config has."""
  if not (path.endswith('.py') and os.path.isfile(path)):
    raise UserError(f'no sweep file at {path} (a .py file that defines get_config and get_runs)')
  path = os.path.abspath(path)
  spec = importlib.util.spec_from_file_location(f'sweep_{os.path.basename(path)[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  step = 'running'
  try:
    spec.loader.exec_module(module)
    if not all(callable(getattr(module, f, None)) for f in ('get_config', 'get_runs')):
      raise UserError(
        f'{path} does not define a sweep: it needs get_config() (the base config) '
        'and get_runs() (a list of (name, overrides))'
      )
    step = 'get_config() in'
    base = module.get_config()
    step = 'get_runs() in'
    runs = module.get_runs()
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the sweep file's own code failed
    message = e.msg if isinstance(e, SyntaxError) else e
    raise UserError(
      f'{step} the sweep file {path} raised {type(e).__name__}: {message} ({where_raised(e, path)})'
    ) from None
  if not isinstance(base, ml_collections.ConfigDict):
    raise UserError(f'{path}: get_config() returned {type(base).__name__}, not a ConfigDict')
  if not (
    isinstance(runs, list)
    and runs
    and all(
      isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], dict)
      for r in runs
    )
  ):
    raise UserError(f'{path}: get_runs() must return a non-empty list of (name, overrides dict)')
  names = [name for name, _ in runs]
  for name in names:
    if not _NAME.fullmatch(name):
      raise UserError(f'{path}: run name {name!r} must be letters, digits and . _ - (not first)')
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise UserError(f'{path}: run names must be unique; repeated: {", ".join(duplicates)}')
  for name, overrides in runs:
    run_config(base, overrides, name)  # every override names a field, before anything runs
  return base, runs


def parse_override(text: str) -> tuple[str, Any]:
  """'field=value' as (field, value): the value as JSON (numbers, booleans, lists), else a
  string."""
  field, _, value = text.partition('=')
  try:
    return field, json.loads(value)
  except json.JSONDecodeError:
    return field, value


def run_config(
  base: ml_collections.ConfigDict, overrides: dict[str, Any], name: str = ''
) -> ml_collections.ConfigDict:
  """A copy of `base` with the dotted-field overrides set."""
  config = ml_collections.ConfigDict(base.to_dict())
  for field, value in overrides.items():
    *parents, leaf = field.split('.')
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise UserError(f'run {name}: the config has no field {field}')
      node = node[part]
    if leaf not in node:
      raise UserError(f'run {name}: the config has no field {field}')
    try:
      node[leaf] = value
    except TypeError as e:  # ConfigDict keeps each field's type
      raise UserError(f'run {name}: {field}={value!r}: {e}') from None
  return config


def list_commands(sweep_path: str, root: str) -> list[str]:
  """One shell command per run that trains it with python -m gptjax.main (in the sweep's W&B
  group, where it logs to W&B, as run_sweep would). The python is the interpreter running this,
  by its path: a bare `python` outside the activated venv would be another, or none."""
  base, runs = load_sweep(sweep_path)
  commands = []
  for name, overrides in runs:
    log = run_config(base, overrides, name).logging
    if log.wandb and not log.wandb_group:
      overrides = {**overrides, 'logging.wandb_group': _group(root)}
    workdir = os.path.join(root, name)
    commands.append(
      shlex.join(
        [sys.executable or 'python', '-m', 'gptjax.main', '--config', sweep_path]
        + ['--workdir', workdir]
        + [f'--config.{field}={value}' for field, value in overrides.items()]
      )
    )
  return commands


def _group(root: str) -> str:
  """The W&B group of a sweep's runs (unless the sweep names one): the name of its ROOT."""
  return os.path.basename(os.path.abspath(root))


def _grouped(config: ml_collections.ConfigDict, root: str) -> ml_collections.ConfigDict:
  if not config.logging.wandb_group:
    config.logging.wandb_group = _group(root)
  return config


def finished_rows(root: str) -> dict[str, dict]:
  """The latest row of each run in ROOT/results.jsonl."""
  path = os.path.join(root, 'results.jsonl')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    fcntl.flock(f, fcntl.LOCK_SH)  # no row half-appended by a job (append_row) is read
    return {row['name']: row for row in observations.read_rows(root)}


def run_sweep(
  sweep_path: str,
  root: str,
  convention: str = '6ND',
  show_progress: bool = True,
  max_stack: int = 16,
  only: str = '',
) -> list[dict]:
  """Trains every run of the sweep that has no row yet (resuming interrupted ones) and returns
  the rows of all runs, in the sweep's order; only: a regular expression, the runs whose names it
  matches (re.search) and no others. Runs that differ only in the fields of
  gptjax.training.stacked.PER_RUN (seed, learning-rate schedule, AdamW's betas, eps and decay,
  cadence) train as stacks of up to max_stack runs (1: one by one)."""
  base, configs, rows, to_train = plan(sweep_path, root, convention, only)
  labels = run_labels(configs)
  for group in seeded_stacks(base, to_train, root, max_stack):
    for row in train_group(group, root, convention, show_progress, labels):
      rows[row['name']] = row
  return [rows[name] for name, _ in configs]


def plan(
  sweep_path: str, root: str, convention: str = '6ND', only: str = '', device_count: int = 0
) -> tuple[ml_collections.ConfigDict, list, dict[str, dict], list]:
  """(base config, [(name, config)] of its runs, the rows of ROOT/results.jsonl by name, the runs
  without a row for their config) of a sweep, its configs checked for device_count devices in one
  process (default: this program's), ROOT made and XLA's compilation cache set in it; a line
  printed for each run skipped."""
  if convention not in accounting.COMPUTE_CONVENTIONS:
    raise UserError(
      f'unknown compute convention {convention!r}; use one of '
      f'{", ".join(accounting.COMPUTE_CONVENTIONS)}'
    )
  base, runs = load_sweep(sweep_path)
  if only:
    try:
      pattern = re.compile(only)
    except re.error as e:
      raise UserError(f'--only {only!r} is not a regular expression ({e})') from None
    runs = [(name, overrides) for name, overrides in runs if pattern.search(name)]
    if not runs:
      raise UserError(f'--only {only!r} matches no run of {sweep_path}')
  configs = [(name, _grouped(run_config(base, overrides, name), root)) for name, overrides in runs]
  for name, config in configs:
    try:
      if device_count:  # the devices of a job elsewhere (gptjax.scaling.cluster)
        configuration.validate(config, device_count)
      else:
        configuration.validate(config, jax.device_count(), jax.process_count())
    except UserError as e:
      raise UserError(f'run {name}: {e}') from None
  os.makedirs(root, exist_ok=True)
  _cache_compilations(root)
  rows = finished_rows(root)
  labels = run_labels(configs)
  to_train = []
  for name, config in configs:
    if is_finished(rows.get(name), config):
      print(f'{labels[name]}: finished, skipped')
    else:
      to_train.append((name, config))
  return base, configs, rows, to_train


def run_labels(configs: list[tuple[str, ml_collections.ConfigDict]]) -> dict[str, str]:
  """How the lines about a run name it: '[position/runs] name'."""
  return {name: f'[{i + 1}/{len(configs)}] {name}' for i, (name, _) in enumerate(configs)}


def is_finished(row: dict | None, config: ml_collections.ConfigDict) -> bool:
  """Whether `row` (a run's latest row, or None) records a finished run of `config`."""
  # configuration.upgrade: a row written before fields moved still names its run's config.
  return row is not None and configuration.upgrade(row['config']) == _as_json(config)


def train_group(
  group: list[tuple[str, ml_collections.ConfigDict]],
  root: str,
  convention: str = '6ND',
  show_progress: bool = True,
  labels: dict[str, str] | None = None,
) -> list[dict]:
  """Trains (or resumes) one stack of runs, or a run alone, each in ROOT/<name>, appends each
  run's row to ROOT/results.jsonl and returns the rows (a run that has a row by now, from another
  process of the sweep, is skipped and its row returned): what the sweep runner does with each
  stack, and a job of gptjax.scaling.cluster with its one. labels: how the lines name each run
  (default its name)."""
  labels = labels or {}
  # Another process of the sweep may have finished some of these runs since this one planned.
  done = finished_rows(root)
  finished = [done[name] for name, config in group if is_finished(done.get(name), config)]
  for row in finished:
    print(f'{labels.get(row["name"], row["name"])}: finished by another process, skipped')
  group = [(name, config) for name, config in group if not is_finished(done.get(name), config)]
  if not group:
    return finished
  resumed = [_latest_checkpoint(os.path.join(root, name)) for name, _ in group]
  for (name, config), resumed_from in zip(group, resumed):
    if resumed_from >= config.train.steps:  # trained elsewhere, e.g. a command of --list
      state = f'trained to step {resumed_from} already; evaluating'
    else:
      state = 'training' + (f' (resuming from step {resumed_from})' if resumed_from else '')
    stack = f' (stacked with {len(group) - 1} more)' if len(group) > 1 else ''
    print(f'{labels.get(name, name)}: {state}{stack}', flush=True)
  start = time.perf_counter()
  names = ', '.join(name for name, _ in group)
  try:
    if len(group) == 1:
      name, config = group[0]
      results = [
        trainer.train_and_evaluate(config, os.path.join(root, name), show_progress=show_progress)
      ]
    else:
      results = stacked.train_stacked(
        [(config, os.path.join(root, name)) for name, config in group], show_progress=False
      )
  except UserError as e:
    raise UserError(f'run {names}: {e}') from None
  wall_s = (time.perf_counter() - start) / len(group)  # each run's share of the group's
  rows = []
  for (name, config), metrics, resumed_from in zip(group, results, resumed):
    row = result_row(
      name, config, os.path.join(root, name), metrics, convention, wall_s, resumed_from
    )
    append_row(root, row)
    rows.append(row)
    print(outcome_line(labels.get(name, name), row), flush=True)
  return finished + rows


def outcome_line(label: str, row: dict) -> str:
  """The line that reports a finished run's row."""
  outcome = (
    f'diverged ({row["diverged"]})' if 'diverged' in row else f'eval loss {row["eval_loss"]:.4f}'
  )
  return (
    f'{label}: N={row["N"]:,} D={row["D"]:,} C={row["C"]:.3g} {outcome} ({row["wall_s"]:.0f} s)'
  )


def append_row(root: str, row: dict) -> None:
  """Appends `row` to ROOT/results.jsonl as one write under an exclusive lock of the file: the
  jobs of a sweep on a cluster append their rows concurrently (flock: NFS supports it; Lustre
  when mounted with -o flock)."""
  with open(os.path.join(root, 'results.jsonl'), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
    f.write(json.dumps(row) + '\n')
    f.flush()


def seeded_stacks(
  base: ml_collections.ConfigDict, to_train: list, root: str, max_stack: int
) -> list[list]:
  """The runs to train in their stacks (see _stacks), each workdir given the shared tokenizer and
  data cache (made in ROOT/_shared from the base config on first need) unless it makes its own."""
  shared = _SharedData(base, os.path.join(root, SHARED))
  groups = _stacks(to_train, max_stack)
  for group in groups:
    for name, config in group:
      shared.seed(config, os.path.join(root, name))
  return groups


def _stacks(named_configs: list, max_stack: int) -> list[list]:
  """The runs in stacks of up to max_stack that stacked.group_key says can train together, each
  ordered by length (a stack's runs then retire together where they can); a run that cannot
  stack is a group of its own. Stacks keep the sweep's order of their first runs."""
  groups: dict = {}
  for index, (name, config) in enumerate(named_configs):
    key = stacked.group_key(config) if max_stack > 1 else None
    groups.setdefault(key if key is not None else ('alone', index), []).append((name, config))
  result = []
  for members in groups.values():
    members = sorted(members, key=lambda run: run[1].train.steps)
    result.extend(members[i : i + max_stack] for i in range(0, len(members), max_stack))
  return result


def _cache_compilations(root: str) -> None:
  """XLA's persistent compilation cache in ROOT/_xla_cache (unless one is set already): runs of
  the same shape, a model at several data sizes or budgets, then compile their steps once."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.join(root, '_xla_cache'))


def result_row(
  name: str,
  config: ml_collections.ConfigDict,
  workdir: str,
  metrics: dict[str, float],
  convention: str,
  wall_s: float,
  resumed_from: int,
) -> dict:
  """The results.jsonl row of a finished run. D is the tokens trained on (steps x batch x seq_len:
  an encoder-decoder's target tokens) and unique_tokens the distinct training tokens they were
  drawn from, as the run's data counts them (its train_tokens)."""
  tokenizer, data = _load_data(config, workdir)
  model = configuration.model_config(config, tokenizer.vocab_size)
  params = accounting.count_params(model)
  tokens = config.train.steps * config.train.global_batch_size * config.train.seq_len
  compute = accounting.training_compute(model, tokens, config.train.seq_len, convention)
  unique_tokens = data.train_tokens
  logged = metrics_lib.read_metrics(workdir, config.train.steps)
  if 'diverged' in metrics:  # retired by a non-finite step: no final loss
    metrics = {**metrics, 'eval_loss': None}
  eval_losses = [r['eval_loss'] for r in logged if 'eval_loss' in r]
  if metrics['eval_loss'] is not None:
    eval_losses.append(metrics['eval_loss'])
  train_losses = [r['train_loss'] for r in logged if 'train_loss' in r]
  throughputs = sorted(r['tokens_per_s'] for r in logged if 'tokens_per_s' in r)
  return {
    'name': name,
    'N': params.non_embedding,
    'N_total': params.total,
    'D': tokens,
    'unique_tokens': unique_tokens,
    'C': compute,
    'C_convention': convention,
    'N_compute': compute / (6 * tokens),  # the parameters C counts: C = 6 N_compute D
    'steps': config.train.steps,
    'train_loss': train_losses[-1] if train_losses else None,
    'eval_loss': metrics['eval_loss'],
    'eval_loss_se': metrics.get('eval_loss_se'),  # of the final evaluation's sample
    'best_eval_loss': min(eval_losses, default=None),
    'tokens_per_s': throughputs[len(throughputs) // 2] if throughputs else None,  # the median
    'wall_s': wall_s,
    'resumed_from_step': resumed_from,
    'stacked': metrics.get('stacked', 1),  # runs trained together as one program
    **({'diverged': metrics['diverged']} if 'diverged' in metrics else {}),
    'config': _as_json(config),
  }


def _as_json(config: ml_collections.ConfigDict) -> dict:
  """The run's config as its row records it: without logging.*, which changes nothing the row
  measures (turning W&B on finishes no run again, and tuning curves still group the rows)."""
  as_json = json.loads(config.to_json())
  as_json.pop('logging', None)
  return as_json


def _latest_checkpoint(workdir: str) -> int:
  directory = os.path.join(workdir, 'checkpoints')
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
  return max(steps, default=0)


def _load_data(config: ml_collections.ConfigDict, workdir: str):
  """(tokenizer, data) of the workdir, by the run's architecture, made on first use."""
  return registry.get(config.model.architecture).load_data(config, workdir, True)


class _SharedData:
  """The tokenizer and data cache of the base config, made once in ROOT/_shared (on first need)
  and put into the workdir of every run that would make the same cache."""

  def __init__(self, base: ml_collections.ConfigDict, directory: str):
    self.base, self.directory = base, directory
    self.layout: cache.Layout | None = None

  def seed(self, config: ml_collections.ConfigDict, workdir: str) -> None:
    """Puts the shared tokenizer and cache into the run's workdir, unless the run makes a cache of
    its own (another architecture, or other settings the cache depends on) or has one already."""
    if config.model.architecture != self.base.model.architecture:
      return  # its loader may lay the cache out differently
    if self.layout is None:
      if not os.path.isdir(self.directory):
        print(f'making the shared tokenizer and data caches in {self.directory}', flush=True)
      self.layout = _load_data(self.base, self.directory)[1].layout
    if cache.same_cache(self.layout, config, self.base):
      cache.copy_cache(self.layout, self.directory, workdir)
