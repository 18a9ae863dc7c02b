"""The package installs with pip (not only editable) and its commands run from any directory."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_pip_install_then_train_from_another_directory(tmp_path):
  # Installed from a copy, so the build never writes into the checkout; offline, with this
  # environment's setuptools and dependencies.
  source = tmp_path / 'source'
  shutil.copytree(
    os.path.join(REPO, 'gptjax'), source / 'gptjax', ignore=shutil.ignore_patterns('__pycache__')
  )
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO, name), source)
  target = tmp_path / 'site'
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'install',
      '-q',
      '--no-deps',
      '--no-build-isolation',
      '--target',
      str(target),
      str(source),
    ],
    check=True,
    capture_output=True,
  )
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {**os.environ, 'PYTHONPATH': str(target)}
  where = subprocess.run(
    [sys.executable, '-c', 'import gptjax; print(gptjax.__file__)'],
    cwd=elsewhere,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert where.stdout.startswith(str(target)), where.stdout
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'gptjax.main',
      '--config',
      'tiny',
      '--workdir',
      'runs/x',
      '--config.tokenizer.kind=byte',
      '--config.data.max_documents=30',
      '--config.train.steps=4',
      '--config.train.warmup_steps=1',
      '--config.sample.max_new_tokens=0',
    ],
    cwd=elsewhere,
    env=env,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'eval loss' in result.stdout
  assert os.path.isdir(elsewhere / 'runs' / 'x' / 'checkpoints' / '4')


# What the core install leaves out: the [hf], [eval], [track], [cluster] and [dev] extras'
# packages that a core command could import by mistake.
EXTRAS_PACKAGES = (
  'torch',
  'transformers',
  'safetensors',
  'tokenizers',
  'lm_eval',
  'wandb',
  'submitit',
  'sacrebleu',
)

# Runs a module as `python -m` does, with the extras' packages unimportable, as in a core install.
WITHOUT_EXTRAS = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(','))
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in blocked:
      raise ModuleNotFoundError(f'No module named {name!r} (blocked: not in the core install)')
sys.meta_path.insert(0, Block())
module, sys.argv = sys.argv[2], [sys.argv[2]] + sys.argv[3:]
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""

CORE_SWEEP = """
from gptjax.configs import tiny


def get_config():
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.max_documents = 30
  config.train.update(steps=3, warmup_steps=1, eval_every=3, checkpoint_every=3, log_every=1)
  return config


def get_runs():
  return [('lr1', {'train.lr': 1e-3}), ('lr2', {'train.lr': 2e-3})]
"""


@pytest.mark.slow
def test_the_core_install_trains_samples_sweeps_and_fits_without_the_extras(tmp_path):
  """Each command a core install offers runs with the extras' packages unimportable."""
  script = tmp_path / 'without_extras.py'
  script.write_text(WITHOUT_EXTRAS)
  (tmp_path / 'core_sweep.py').write_text(CORE_SWEEP)
  rows = '\n'.join(f'{n},{3 * (1e6 / n) ** 0.1:.6f}' for n in (1e4, 3e4, 1e5, 3e5, 1e6))
  (tmp_path / 'runs.csv').write_text('N,eval_loss\n' + rows + '\n')

  def run(module: str, *args: str, ok: bool = True) -> str:
    result = subprocess.run(
      [sys.executable, str(script), ','.join(EXTRAS_PACKAGES), module, *args],
      cwd=tmp_path,
      capture_output=True,
      text=True,
    )
    assert (result.returncode == 0) == ok, f'{module}: {result.stderr[-2000:]}'
    return result.stdout if ok else result.stderr

  train = (
    '--config.tokenizer.kind=byte',
    '--config.data.max_documents=30',
    '--config.train.steps=3',
    '--config.train.warmup_steps=1',
    '--config.sample.max_new_tokens=0',
  )
  assert 'eval loss' in run('gptjax.main', '--config', 'tiny', '--workdir', 'w', *train)
  assert run('gptjax.sample', '--workdir', 'w', '--prompt', 'def ', '--max_new_tokens', '8')
  run('gptjax.sweep', 'run', 'core_sweep.py', '--root', 'sweep')
  assert len((tmp_path / 'sweep' / 'results.jsonl').read_text().splitlines()) == 2
  fitted = run('gptjax.scaling', 'fit', 'runs.csv', '--law', 'kaplan_n', '--n_col', 'N')
  assert 'alpha_N' in fitted
  # what needs an extra says which, in one line
  refused = run('gptjax.convert', 'to_hf', '--workdir', 'w', '--out', 'hf', ok=False)
  assert refused.strip().splitlines() == [refused.strip()] and refused.startswith('error:')
  assert "pip install 'gptjax[hf]'" in refused and not (tmp_path / 'hf').exists()
