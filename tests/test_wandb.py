"""Weights & Biases logging (config.logging.wandb, gptjax/training/metrics.py), in W&B's offline
mode: one W&B run per workdir, continued under the same id when the run resumes, with the config
and the metrics.jsonl rows at their steps; a sweep's runs, stacked in one process, each a run of
their own in the sweep's group; and one error line when wandb is not installed."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import write_corpus

from gptjax import configuration
from gptjax.configs import default
from gptjax.errors import UserError
from gptjax.scaling import sweep
from gptjax.training import metrics, trainer
from gptjax.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two runs that differ only in the learning rate: one stack, one process.
LR_SWEEP = """
from gptjax.configs import tiny


def get_config():
  config = tiny.get_config()
  config.tokenizer.kind, config.sample.max_new_tokens = 'byte', 0
  config.data.source, config.data.text_files = 'text_files', {corpus!r}
  config.train.update(steps=4, warmup_steps=1, eval_every=2, checkpoint_every=4, log_every=1)
  config.logging.wandb = True
  return config


def get_runs():
  return [('lr1', {{'train.lr': 1e-3}}), ('lr3', {{'train.lr': 3e-3}})]
"""


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
  """W&B offline, its settings, caches and logs under tmp_path: nothing in the home directory."""
  wandb = pytest.importorskip('wandb', reason='logging.wandb needs the optional wandb package')
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  for name in ('WANDB_DATA_DIR', 'WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR'):
    os.makedirs(tmp_path / name, exist_ok=True)
    monkeypatch.setenv(name, str(tmp_path / name))
  monkeypatch.delenv('WANDB_DIR', raising=False)  # the runs' files go in their workdirs
  monkeypatch.chdir(tmp_path)
  yield
  wandb.teardown()  # the next test's W&B reads its own environment


def _records(run_directory: str) -> list[dict]:
  """The records of an offline run's .wandb file, read by wandb's own reader."""
  [path] = glob.glob(os.path.join(run_directory, 'run-*.wandb'))
  result = subprocess.run(
    [sys.executable, '-m', 'wandb', 'leet', 'inspect', '--json', path],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _run_of(records: list[dict]) -> dict:
  [run] = [r['run'] for r in records if r['type'] == 'run']
  return run


def _history(records: list[dict]) -> dict[int, dict]:
  """{step: the metrics logged at it} (a step's train and eval rows are one W&B history row)."""
  rows = {}
  for r in records:
    if r['type'] == 'history':
      item = {k: v for k, v in r['history']['item'].items() if not k.startswith('_')}
      rows.setdefault(r['history']['step']['num'], {}).update(item)
  return rows


def _offline_runs(wandb_dir: str) -> list[str]:
  """The offline run directories, oldest first (one per start of the run)."""
  return sorted(glob.glob(os.path.join(wandb_dir, 'wandb', 'offline-run-*')))


def _assert_logged_as_jsonl(history: dict[int, dict], workdir: str) -> None:
  rows = metrics.read_metrics(workdir)
  assert rows
  for row in rows:
    logged = history[row['step']]
    for name, value in row.items():
      if name != 'step':
        assert logged[name] == pytest.approx(value), (row['step'], name)


def test_a_resumed_run_continues_its_wandb_run_with_the_same_metrics(
  offline_wandb, tiny_config, corpus_glob, tmp_path
):
  config = tiny_config
  config.data.source, config.data.text_files = 'text_files', corpus_glob
  config.train.update(steps=20, warmup_steps=5, log_every=5, eval_every=10, checkpoint_every=10)
  config.train.eval_batches = 1
  config.logging.update(wandb=True, wandb_tags='tiny, resumed', wandb_group='tests')
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at=10)  # as if preempted
  trainer.train_and_evaluate(config, workdir, show_progress=False)  # resumed from checkpoint 10

  with open(os.path.join(workdir, metrics.RUN_ID_FILE)) as f:
    run_id = f.read().strip()
  assert not os.path.exists(tmp_path / 'wandb')  # in the workdir, not the current directory
  starts = _offline_runs(workdir)  # W&B offline writes a directory per start; sync joins them
  assert len(starts) == 2 and all(path.endswith(f'-{run_id}') for path in starts), starts
  first, resumed = [_records(path) for path in starts]
  for records in (first, resumed):
    run = _run_of(records)
    assert run['run_id'] == run_id and run['resume']
    assert (run['project'], run['display_name'], run['run_group']) == ('gptjax', 'run', 'tests')
    assert run['tags'] == ['tiny', 'resumed']
    logged_config = run['config']['update']
    assert logged_config['train']['steps'] == 20 and logged_config['model']['d_model'] == 32
    assert [r['exit']['exit_code'] for r in records if r['type'] == 'exit'] == [0]
  assert sorted(_history(first)) == [5, 10] and sorted(_history(resumed)) == [15, 20]
  assert 'eval_loss' in _history(first)[10] and 'eval_loss' in _history(resumed)[20]
  _assert_logged_as_jsonl({**_history(first), **_history(resumed)}, workdir)


def test_a_sweeps_stacked_runs_are_wandb_runs_of_their_own_in_its_group(
  offline_wandb, tmp_path, monkeypatch
):
  monkeypatch.setenv('WANDB_DIR', str(tmp_path / 'wandb_dir'))  # W&B's files there, not in workdirs
  os.makedirs(tmp_path / 'wandb_dir')
  path = tmp_path / 'lrs.py'
  path.write_text(LR_SWEEP.format(corpus=write_corpus(tmp_path / 'corpus')))
  root = str(tmp_path / 'lr_sweep')
  rows = sweep.run_sweep(str(path), root, show_progress=False)
  assert [row['stacked'] for row in rows] == [2, 2]  # one process, two W&B runs open together
  assert all('logging' not in row['config'] for row in rows)  # rows record what was trained
  ids = set()
  for name in ('lr1', 'lr3'):
    workdir = os.path.join(root, name)
    with open(os.path.join(workdir, metrics.RUN_ID_FILE)) as f:
      run_id = f.read().strip()
    ids.add(run_id)
    assert not os.path.exists(os.path.join(workdir, 'wandb'))
    [directory] = [p for p in _offline_runs(str(tmp_path / 'wandb_dir')) if p.endswith(run_id)]
    records = _records(directory)
    run = _run_of(records)
    assert (run['run_id'], run['display_name'], run['run_group']) == (run_id, name, 'lr_sweep')
    history = _history(records)
    assert sorted(history) == [1, 2, 3, 4] and 'eval_loss' in history[4]
    _assert_logged_as_jsonl(history, workdir)
  assert len(ids) == 2
  commands = sweep.list_commands(str(path), root)
  assert all('--config.logging.wandb_group=lr_sweep' in command for command in commands)


def test_turning_wandb_on_or_off_is_allowed_when_a_run_resumes(tmp_path):
  config = default.get_config()
  saved = json.loads(config.to_json())
  del saved['logging']  # a run started before gptjax had logging.*
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  config.logging.update(wandb=True, wandb_name='resumed', wandb_tags='later')
  workdir_lib.check_config(config, str(tmp_path))
  workdir_lib.save_config(config, str(tmp_path))
  config.logging.wandb = False
  workdir_lib.check_config(config, str(tmp_path))


def test_a_stored_run_id_that_is_not_one_is_refused_naming_the_file(tmp_path):
  path = tmp_path / metrics.RUN_ID_FILE
  run_id = metrics.wandb_run_id(str(tmp_path))  # made and stored on the first start
  assert path.read_text() == run_id + '\n' and metrics.wandb_run_id(str(tmp_path)) == run_id
  path.write_text('not/an id\n')
  with pytest.raises(UserError, match=f'{path} does not hold a W&B run id'):
    metrics.wandb_run_id(str(tmp_path))


def test_wandb_turned_on_without_wandb_installed_is_an_error_before_anything_runs(
  tiny_config, tmp_path, monkeypatch
):
  monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb now raises ImportError
  configuration.validate(tiny_config, 1)  # off by default: no wandb needed
  tiny_config.logging.wandb = True
  with pytest.raises(UserError, match='logging.wandb=True needs the wandb package.*pip install'):
    trainer.train_and_evaluate(tiny_config, str(tmp_path / 'run'), show_progress=False)
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow
def test_the_command_line_says_so_in_one_line(tmp_path):
  hide_wandb = (
    "import runpy, sys; sys.modules['wandb'] = None; "
    "runpy.run_module('gptjax.main', run_name='__main__')"
  )
  result = subprocess.run(
    [sys.executable, '-c', hide_wandb, '--config', 'tiny', f'--workdir={tmp_path / "run"}']
    + ['--config.logging.wandb=True'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'pip install wandb' in errors[0], result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'run').exists()
