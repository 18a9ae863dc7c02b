"""The filesystem in the way (issue 17): a workdir that is a file, a read-only workdir or parent,
a file size limit (`ulimit -f`) or a full disk while a checkpoint is saved. Each is one `error:`
line naming the path and what to do, no traceback and no orbax or asyncio noise after it; earlier
checkpoints stay as they were, no temporary checkpoint directory is left, and the same command
resumes once the cause is gone."""

import ctypes
import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import types

import jax.numpy as jnp
import pytest

from gptjax.errors import UserError
from gptjax.training import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4  # the trained workdir's run: checkpoints 2 and 4


def _command(workdir, corpus_glob, steps=STEPS):
  return [
    sys.executable,
    '-m',
    'gptjax.main',
    '--config',
    'tiny',
    f'--workdir={workdir}',
    '--config.tokenizer.kind=byte',
    '--config.sample.max_new_tokens=0',
    '--config.data.source=text_files',
    f'--config.data.text_files={corpus_glob}',
    f'--config.train.steps={steps}',
    '--config.train.warmup_steps=1',
    '--config.train.checkpoint_every=2',
    '--config.train.eval_every=2',
    '--config.train.eval_batches=1',
  ]


def _run(args, preexec_fn=None):
  return subprocess.run(
    args, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn
  )


def _assert_one_error_line(result, *fragments):
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if 'error:' in line]
  assert len(errors) == 1 and errors[0].startswith('error: '), result.stderr[-3000:]
  # The error line is the last thing said: no orbax or asyncio noise, no progress bar after it.
  assert result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  for noise in ('Event loop is closed', 'never retrieved', 'orbax'):
    assert noise not in result.stderr, result.stderr[-3000:]


def _tree(directory):
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        files[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return files


def _without_write_override():
  """For a child run as root, who writes anywhere: drop the capabilities that bypass file
  permissions (from the bounding set, so the python it runs has none of them)."""
  if os.geteuid() != 0:
    return
  libc = ctypes.CDLL(None, use_errno=True)
  for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
    if libc.prctl(24, capability, 0, 0, 0):  # PR_CAPBSET_DROP
      raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')


def _file_size_limit(limit):
  def preexec():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  return preexec


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  from conftest import write_corpus

  base = tmp_path_factory.mktemp('filesystem')
  corpus = write_corpus(base / 'corpus')
  workdir = str(base / 'trained')
  result = _run(_command(workdir, corpus))
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4', 'fingerprints.json']
  return workdir, corpus


def _copy(trained, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(trained[0], workdir)
  return workdir


@pytest.mark.slow  # runs the command in subprocesses
def test_a_workdir_that_is_a_file_is_one_error_and_the_file_is_kept(trained, tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('my notes')
  for workdir in (path, path / 'run'):
    result = _run(_command(workdir, trained[1]))
    _assert_one_error_line(result, str(path))
  assert path.read_text() == 'my notes'


@pytest.mark.slow  # runs the command in subprocesses
def test_a_read_only_workdir_or_parent_is_one_error_and_nothing_changes(trained, tmp_path):
  parent = tmp_path / 'read_only'
  parent.mkdir()
  workdir = _copy(trained, tmp_path)
  before = _tree(workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  os.chmod(parent, 0o555)
  os.chmod(checkpoints, 0o555)
  try:
    result = _run(_command(parent / 'run', trained[1]), _without_write_override)
    _assert_one_error_line(result, f'{parent}/run', 'writable')
    result = _run(_command(workdir, trained[1], STEPS + 2), _without_write_override)
    _assert_one_error_line(result, checkpoints, 'Permission denied', 'writable')
    os.chmod(workdir, 0o555)
    result = _run(_command(workdir, trained[1], STEPS + 2), _without_write_override)
    _assert_one_error_line(result, f'the workdir {workdir}', 'writable')
    # Reading a read-only workdir needs no write.
    result = _run(
      [
        sys.executable,
        '-m',
        'gptjax.sample',
        f'--workdir={workdir}',
        '--prompt=def',
        '--max_new_tokens=2',
      ],
      _without_write_override,
    )
    assert result.returncode == 0, result.stderr
  finally:
    for directory in (parent, checkpoints, workdir):
      os.chmod(directory, 0o755)
  assert not os.listdir(parent)
  # Not compared: the lock, and config.json, which records the new step budget (resumable).
  kept = lambda tree: {k: v for k, v in tree.items() if k not in ('.lock', 'config.json')}
  assert kept(_tree(workdir)) == kept(before)
  result = _run(_command(workdir, trained[1], STEPS + 2))
  assert result.returncode == 0, result.stderr
  assert os.path.isdir(os.path.join(checkpoints, str(STEPS + 2)))


@pytest.mark.slow  # runs the command in subprocesses
def test_a_file_size_limit_while_saving_is_one_error_and_the_run_resumes_once_lifted(
  trained, tmp_path
):
  workdir = _copy(trained, tmp_path)
  checkpoints = os.path.join(workdir, 'checkpoints')
  before = {k: v for k, v in _tree(checkpoints).items() if k != 'fingerprints.json'}
  # Big enough for the config, metrics and event files, too small for a checkpoint's data.
  result = _run(_command(workdir, trained[1], STEPS + 2), _file_size_limit(100_000))
  _assert_one_error_line(
    result,
    f'could not save checkpoint {STEPS + 2} in {checkpoints}',
    'File too large',
    'ulimit -f',
    f'checkpoints [2, {STEPS}] are intact',
    f'resume from step {STEPS}',
  )
  assert not glob.glob(os.path.join(checkpoints, '*orbax-checkpoint-tmp*'))
  assert {k: v for k, v in _tree(checkpoints).items() if k != 'fingerprints.json'} == before
  result = _run(_command(workdir, trained[1], STEPS + 2))
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(checkpoints)) == ['2', str(STEPS), str(STEPS + 2), 'fingerprints.json']


class _FullDisk:
  """A checkpoint manager whose save fails as orbax's does on a full disk, after leaving its
  temporary step directory behind."""

  def __init__(self, directory):
    self.directory = directory

  def save(self, step, args, force):
    os.makedirs(os.path.join(self.directory, f'{step}.orbax-checkpoint-tmp-123', 'd'))
    raise ValueError(
      'OUT_OF_RANGE: Error writing "params.wte/0" in OCDBT database: Failed writing: "...": '
      "Failed to write 4096 bytes to file 11: No space left on device [os_error_code='28']"
    )

  def reload(self):
    pass

  def all_steps(self):
    return sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())


def test_a_full_disk_while_saving_is_one_error_and_leaves_no_temporary_directory(
  tmp_path, monkeypatch
):
  directory = tmp_path / 'checkpoints'
  (directory / '10').mkdir(parents=True)
  monkeypatch.setattr(checkpoint, 'fingerprint', lambda state: 'digest')
  with pytest.raises(UserError) as raised:
    checkpoint.save(_FullDisk(str(directory)), types.SimpleNamespace(step=jnp.array(20)))
  message = str(raised.value)
  assert message.startswith(f'could not save checkpoint 20 in {directory}: No space left on device')
  assert 'checkpoints [10] are intact' in message and 'free space' in message, message
  assert sorted(os.listdir(directory)) == ['10']


@pytest.mark.slow  # runs the commands in subprocesses
def test_an_unreadable_checkpoint_is_one_short_warning_without_tensorstore_dumps(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  data = glob.glob(os.path.join(workdir, 'checkpoints', str(STEPS), '**', 'd', '*'), recursive=True)
  assert data
  for path in data:
    with open(path, 'wb') as f:
      f.write(os.urandom(3000))
  sample = [sys.executable, '-m', 'gptjax.sample', f'--workdir={workdir}', '--prompt=def']
  for args in (sample + ['--max_new_tokens=2'], _command(workdir, trained[1], STEPS + 2)):
    result = _run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith('warning:')]
    assert len(warnings) == 1 and f'checkpoint {STEPS}' in warnings[0], result.stderr[-3000:]
    assert 'damaged' in warnings[0] and len(warnings[0].replace(workdir, 'W')) < 200, warnings[0]
    for noise in ('Traceback', 'TensorStore', 'never retrieved', 'Exception:'):
      assert noise not in result.stderr, result.stderr[-3000:]
