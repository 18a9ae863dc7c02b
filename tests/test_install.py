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
