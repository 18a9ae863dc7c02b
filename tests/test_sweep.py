"""The sweep runner: python -m gptjax.sweep run SWEEP.py --root ROOT [--list]"""

import json
import math
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_corpus

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.scaling import sweep
from gptjax.training import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MICRO_SWEEP = """
from gptjax.configs import tiny


def get_config():
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.source, config.data.text_files = 'text_files', {corpus!r}
  config.train.update(steps=4, warmup_steps=1, eval_every=2, checkpoint_every=4, log_every=1)
  return config


def get_runs():
  return [('narrow', {{'model.d_model': 16, 'model.n_heads': 1, 'model.d_ff': 64}}),
          ('base', {{'data.max_train_tokens': 20000}})]
"""


# An encoder-decoder on generated JSONL pairs (source: digits, target: their reversal) and a BERT
# on the generated corpus, each with a run that shares the base's cache and one that makes its own.
PAIRS_SWEEP = """
from gptjax.configs import transformer_tiny


def get_config():
  config = transformer_tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.model.update(n_layers=1, d_model=32, n_heads=2, d_ff=64, n_ctx=32)
  config.encoder_decoder.update(n_encoder_layers=1, source_len=12)
  config.data.source, config.data.pairs_files = 'pairs_jsonl', {pairs!r}
  config.data.val_fraction = 0.1
  config.train.update(seq_len=8, global_batch_size=8, steps=4, warmup_steps=1,
                      eval_every=2, checkpoint_every=4, log_every=1, eval_batches=1)
  return config


def get_runs():
  return [('narrow', {{'model.d_model': 16, 'model.n_heads': 1}}),
          ('fewer_pairs', {{'data.max_documents': 50}})]
"""

BERT_SWEEP = """
from gptjax.configs import bert_tiny


def get_config():
  config = bert_tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.model.update(n_layers=1, d_model=32, n_heads=2, d_ff=64, n_ctx=32)
  config.data.source, config.data.text_files = 'text_files', {corpus!r}
  config.train.update(seq_len=32, global_batch_size=8, steps=4, warmup_steps=1, eval_every=2,
                      checkpoint_every=4, log_every=1, eval_batches=1)
  return config


def get_runs():
  return [('narrow', {{'model.d_model': 16, 'model.n_heads': 1}}),
          ('few_documents', {{'data.max_documents': 20}})]
"""


@pytest.fixture
def micro_sweep(tmp_path):
  path = tmp_path / 'micro.py'
  path.write_text(MICRO_SWEEP.format(corpus=write_corpus(tmp_path / 'corpus')))
  return str(path)


def _write_pairs(directory, n: int = 200) -> str:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'pairs.jsonl'), 'w') as f:
    for i in range(n):
      source = ' '.join(str((i * 7 + k) % 10) for k in range(2 + i % 4))
      f.write(json.dumps({'source': source, 'target': source[::-1]}) + '\n')
  return os.path.join(directory, '*.jsonl')


def _results(root) -> list[dict]:
  with open(os.path.join(root, 'results.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_runner_shares_tokens_records_rows_and_skips_finished_runs(micro_sweep, tmp_path, capsys):
  root = str(tmp_path / 'runs')
  rows = sweep.run_sweep(micro_sweep, root, show_progress=False)
  assert [row['name'] for row in rows] == ['narrow', 'base'] and _results(root) == rows
  narrow, base = rows
  base_config, runs = sweep.load_sweep(micro_sweep)
  params = accounting.count_params(
    configuration.model_config(sweep.run_config(base_config, runs[0][1]), 262)
  )
  assert (narrow['N'], narrow['N_total']) == (params.non_embedding, params.total)
  assert narrow['D'] == 4 * 8 * 32 and narrow['steps'] == 4 and narrow['resumed_from_step'] == 0
  assert narrow['C'] == 6 * params.non_embedding * narrow['D'] and narrow['C_convention'] == '6ND'
  assert base['unique_tokens'] == 20000 and narrow['unique_tokens'] > 20000
  assert narrow['config']['model']['d_model'] == 16 and base['config']['model']['d_model'] == 32
  assert narrow['best_eval_loss'] <= narrow['eval_loss'] < narrow['train_loss'] + 1
  assert narrow['tokens_per_s'] > 0 and narrow['wall_s'] > 0
  for name in ('narrow', 'base'):  # one token cache on disk, linked into each workdir
    assert os.path.samefile(
      os.path.join(root, '_shared', 'data', 'train.bin'),
      os.path.join(root, name, 'data', 'train.bin'),
    )

  capsys.readouterr()
  assert sweep.run_sweep(micro_sweep, root, show_progress=False) == rows
  assert capsys.readouterr().out.count('finished, skipped') == 2
  assert len(_results(root)) == 2


def test_a_run_finished_by_another_process_since_planning_is_not_appended_again(
  micro_sweep, tmp_path, capsys
):
  root = str(tmp_path / 'runs')
  *_, to_train = sweep.plan(micro_sweep, root, only='^nar')
  assert [name for name, _ in to_train] == ['narrow']
  (first,) = sweep.run_sweep(micro_sweep, root, show_progress=False, only='^nar')  # the other
  capsys.readouterr()
  assert sweep.train_group(to_train, root) == [first]  # this one, with its plan out of date
  assert 'finished by another process, skipped' in capsys.readouterr().out
  assert _results(root) == [first]


def test_only_trains_the_runs_whose_names_match(micro_sweep, tmp_path):
  root = str(tmp_path / 'runs')
  rows = sweep.run_sweep(micro_sweep, root, show_progress=False, only='^nar')
  assert [row['name'] for row in rows] == ['narrow'] and not os.path.exists(f'{root}/base')
  assert rows[0]['N_compute'] == rows[0]['C'] / (6 * rows[0]['D']) == rows[0]['N']  # under 6ND
  with pytest.raises(UserError, match='matches no run'):
    sweep.run_sweep(micro_sweep, root, show_progress=False, only='wide')
  with pytest.raises(UserError, match='not a regular expression'):
    sweep.run_sweep(micro_sweep, root, show_progress=False, only='(')


def _check_rows(rows: list[dict], sweep_path: str, vocab_size: int) -> None:
  """N and D as the configs give them, a finite eval loss, and the workdir's training tokens."""
  base_config, runs = sweep.load_sweep(sweep_path)
  for row, (name, overrides) in zip(rows, runs):
    config = sweep.run_config(base_config, overrides)
    model = configuration.model_config(config, vocab_size)
    assert row['name'] == name
    assert (row['N'], row['N_total']) == (
      accounting.count_params(model).non_embedding,
      accounting.count_params(model).total,
    )
    assert row['D'] == 4 * config.train.global_batch_size * config.train.seq_len
    assert math.isfinite(row['eval_loss']) and row['steps'] == 4 and row['unique_tokens'] > 0


def test_an_encoder_decoder_sweep_shares_the_pair_cache(tmp_path):
  path = tmp_path / 'pairs_sweep.py'
  path.write_text(PAIRS_SWEEP.format(pairs=_write_pairs(tmp_path / 'pairs')))
  root = str(tmp_path / 'runs')
  rows = sweep.run_sweep(str(path), root, show_progress=False)
  assert [row['name'] for row in rows] == ['narrow', 'fewer_pairs'] and _results(root) == rows
  _check_rows(rows, str(path), vocab_size=262)
  for row in rows:  # D counts target tokens; so does unique_tokens: the labels that are not pad
    labels = np.load(os.path.join(root, row['name'], 'data', 'pairs_train.npy'))[:, 12 + 1 :]
    assert row['unique_tokens'] == np.count_nonzero(labels != 0)
  narrow, fewer = rows
  assert len(np.load(os.path.join(root, 'fewer_pairs', 'data', 'pairs_train.npy'))) == 50
  assert fewer['unique_tokens'] < narrow['unique_tokens']
  for name in ('pairs_train.npy', 'pairs_val.npy', 'pairs_val.jsonl'):
    assert os.path.samefile(
      os.path.join(root, '_shared', 'data', name), os.path.join(root, 'narrow', 'data', name)
    )
  assert not os.path.samefile(
    os.path.join(root, '_shared', 'data', 'pairs_train.npy'),
    os.path.join(root, 'fewer_pairs', 'data', 'pairs_train.npy'),
  )
  assert not os.path.exists(os.path.join(root, '_shared', 'data', 'meta.json'))


def test_a_bert_sweep_shares_the_token_cache(tmp_path):
  path = tmp_path / 'bert_sweep.py'
  path.write_text(BERT_SWEEP.format(corpus=write_corpus(tmp_path / 'corpus')))
  root = str(tmp_path / 'runs')
  rows = sweep.run_sweep(str(path), root, show_progress=False)
  assert [row['name'] for row in rows] == ['narrow', 'few_documents'] and _results(root) == rows
  _check_rows(rows, str(path), vocab_size=262)
  narrow, few = rows
  shared = os.path.join(root, '_shared', 'data', 'train.bin')
  assert narrow['unique_tokens'] == os.path.getsize(shared) // 2  # uint16 tokens
  assert os.path.samefile(shared, os.path.join(root, 'narrow', 'data', 'train.bin'))
  few_tokens = os.path.join(root, 'few_documents', 'data', 'train.bin')
  assert not os.path.samefile(shared, few_tokens)
  assert few['unique_tokens'] == os.path.getsize(few_tokens) // 2 < narrow['unique_tokens']


@pytest.mark.slow
def test_a_sweep_root_holds_the_runs_compilation_cache(tmp_path):
  # In a process of its own: the tests' shared cache (conftest) is already configured in this one.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  script = (
    'import jax, sys\nfrom gptjax.scaling import sweep\n'
    'sweep._cache_compilations(sys.argv[1])\n'
    'jax.jit(lambda x: x * 2 + 1)(1.0).block_until_ready()'
  )
  subprocess.run([sys.executable, '-c', script, str(tmp_path)], cwd=REPO, env=env, check=True)
  assert os.listdir(tmp_path / '_xla_cache')  # the compiled program, for the next run to load


def _command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.sweep', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_list_prints_one_main_command_per_run(micro_sweep, tmp_path):
  root = str(tmp_path / 'runs')
  result = _command('run', micro_sweep, '--root', root, '--list')
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert commands == [  # the interpreter that listed them, not whichever `python` is on PATH
    [
      sys.executable,
      '-m',
      'gptjax.main',
      '--config',
      micro_sweep,
      '--workdir',
      f'{root}/narrow',
      '--config.model.d_model=16',
      '--config.model.n_heads=1',
      '--config.model.d_ff=64',
    ],
    [
      sys.executable,
      '-m',
      'gptjax.main',
      '--config',
      micro_sweep,
      '--workdir',
      f'{root}/base',
      '--config.data.max_train_tokens=20000',
    ],
  ]
  assert not os.path.exists(root)


@pytest.mark.parametrize(
  'source, message',
  [
    ('def get_config():\n  return None\n', 'does not define a sweep'),
    (
      'from gptjax.configs import tiny\nget_config = tiny.get_config\n'
      'def get_runs():\n  return []\n',
      'non-empty list',
    ),
    (
      'from gptjax.configs import tiny\nget_config = tiny.get_config\n'
      'def get_runs():\n  return [("a", {}), ("a", {})]\n',
      'repeated: a',
    ),
    (
      'from gptjax.configs import tiny\nget_config = tiny.get_config\n'
      'def get_runs():\n  return [("../a", {})]\n',
      "run name '../a'",
    ),
    (
      'from gptjax.configs import tiny\nget_config = tiny.get_config\n'
      'def get_runs():\n  return [("a", {"model.width": 3})]\n',
      'run a: the config has no field model.width',
    ),
    (
      'from gptjax.configs import tiny\nget_config = tiny.get_config\n'
      'def get_runs():\n  return [("a", {"model.n_layers": "two"})]\n',
      "model.n_layers='two'",
    ),
    ('raise ValueError("broken")\n', 'ValueError: broken'),
  ],
)
def test_a_file_that_is_not_a_sweep_is_one_user_error(tmp_path, source, message):
  path = tmp_path / 'bad.py'
  path.write_text(source)
  with pytest.raises(UserError, match=message.replace('(', r'\(').replace('.', r'\.')):
    sweep.load_sweep(str(path))


@pytest.mark.slow
def test_command_line_errors_are_one_line(micro_sweep, tmp_path):
  result = _command('run', str(tmp_path / 'missing.py'))
  assert result.returncode == 1
  assert result.stderr == (
    f'error: no sweep file at {tmp_path}/missing.py (a .py file that '
    'defines get_config and get_runs)\n'
  )
  for args, message in (
    (['run', micro_sweep, '--convention', '5ND'], '--convention=5ND: value should be one of'),
    (['walk', micro_sweep], "unknown command 'walk'"),
    (['run'], 'expected RUN SWEEP'),
  ):
    result = _command(*args)
    assert result.returncode == 2
    stderr = result.stderr
    assert stderr.startswith('error: ') and stderr.count('\n') == 1 and message in stderr, stderr


def test_schedule_matches_the_run_length():
  assert sweep.schedule(1000) == {
    'train.steps': 1000,
    'train.warmup_steps': 100,
    'train.eval_every': 125,
    'train.checkpoint_every': 125,
    'train.log_every': 25,
  }
  assert sweep.schedule(5)['train.warmup_steps'] == 1
  config = sweep.run_config(tiny.get_config(), sweep.schedule(52))
  assert (config.train.steps, config.train.eval_every) == (52, 7)


def test_read_metrics_keeps_the_last_line_of_each_step(tmp_path):
  lines = [
    {'step': 1, 'train_loss': 5.0},
    {'step': 2, 'train_loss': 4.0},
    {'step': 2, 'eval_loss': 4.5},
    {'step': 2, 'train_loss': 3.9},
    {'step': 3, 'train_loss': 3.0},
  ]  # resumed after step 1
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
  assert metrics.read_metrics(str(tmp_path), last_step=2) == [lines[0], lines[3], lines[2]]
  assert metrics.read_metrics(str(tmp_path / 'nothing')) == []


@pytest.mark.parametrize(
  'body, where',
  [
    (
      'def get_config():\n  return default.get_config()\n'
      "def get_runs():\n  raise ValueError('no sizes')\n",
      'get_runs() in',
    ),
    ("def get_config():\n  return {}['model']\ndef get_runs():\n  return []\n", 'get_config() in'),
  ],
)
def test_a_sweep_file_whose_code_raises_is_one_line_naming_its_line(tmp_path, body, where):
  path = tmp_path / 'bad_sweep.py'
  path.write_text('from gptjax.configs import default\n' + body)
  with pytest.raises(UserError) as raised:
    sweep.load_sweep(str(path))
  message = str(raised.value)
  assert message.startswith(f'{where} the sweep file {path} raised')
  assert f'{path}, line ' in message and '\n' not in message
