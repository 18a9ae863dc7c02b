"""Runs that die, go wrong or collide: real signals, real truncated files, real processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gptjax import configuration
from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.training import checkpoint, trainer
from gptjax.training import workdir as workdir_lib
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import init_state, load_run

# Fault tests start subprocesses, kill them and damage checkpoints: slow by nature.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(workdir, corpus_glob, *overrides):
  return [
    sys.executable,
    '-m',
    'gptjax.main',
    '--config',
    'tiny',
    '--workdir',
    str(workdir),
    '--config.tokenizer.kind=byte',
    '--config.sample.max_new_tokens=0',
    '--config.data.source=text_files',
    f'--config.data.text_files={corpus_glob}',
    *overrides,
  ]


def _run(workdir, corpus_glob, *overrides, env=None):
  return subprocess.run(
    _command(workdir, corpus_glob, *overrides),
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )


def _final_state(workdir):
  """Every array of the newest checkpoint, as saved."""
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  return step, jax.tree.map(np.asarray, mngr.restore(step, args=ocp.args.StandardRestore()))


def _assert_bitwise_equal(workdir_a, workdir_b):
  (step_a, a), (step_b, b) = _final_state(workdir_a), _final_state(workdir_b)
  assert step_a == step_b
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(jax.tree.leaves(a)) > 20
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _wait_for_checkpoint(workdir, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(os.path.join(workdir, 'checkpoints', 'fingerprints.json')):
      return
    time.sleep(0.05)
  raise AssertionError('the run wrote no checkpoint')


RUN = (
  '--config.train.steps=300',
  '--config.train.checkpoint_every=20',
  '--config.train.log_every=10',
  '--config.train.eval_every=100',
)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run of RUN on the corpus of `_module_corpus`."""
  workdir = tmp_path_factory.mktemp('reference')
  result = _run(workdir, _module_corpus(tmp_path_factory), *RUN)
  assert result.returncode == 0, result.stderr
  return workdir


def _module_corpus(tmp_path_factory):
  from conftest import write_corpus

  return write_corpus(tmp_path_factory.getbasetemp() / 'module_corpus')


def test_sigkill_at_a_random_moment_then_restart_is_bitwise_identical(
  reference, tmp_path_factory, tmp_path
):
  corpus_glob, killed = _module_corpus(tmp_path_factory), tmp_path / 'killed'
  process = subprocess.Popen(
    _command(killed, corpus_glob, *RUN),
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  _wait_for_checkpoint(killed, process)
  time.sleep(np.random.default_rng().uniform(0, 1.5))
  process.kill()  # SIGKILL: no handler, no cleanup
  process.wait()
  restarted = _run(killed, corpus_glob, *RUN)
  assert restarted.returncode == 0, restarted.stderr
  _assert_bitwise_equal(reference, killed)


def test_sigterm_saves_the_current_step_and_the_restart_continues_exactly(
  reference, tmp_path_factory, tmp_path
):
  corpus_glob, preempted = _module_corpus(tmp_path_factory), tmp_path / 'preempted'
  process = subprocess.Popen(
    _command(preempted, corpus_glob, *RUN),
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_checkpoint(preempted, process)
  process.send_signal(signal.SIGTERM)
  stderr = process.communicate(timeout=120)[1]
  assert process.returncode == 143, stderr
  stopped_at = int(stderr.split('stopped by SIGTERM after step ')[1].split(';')[0])
  assert _final_state(preempted)[0] == stopped_at < 300
  restarted = _run(preempted, corpus_glob, *RUN)
  assert restarted.returncode == 0, restarted.stderr
  _assert_bitwise_equal(reference, preempted)


def _train(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, str(workdir), show_progress=False, **kwargs)


def _text_config(config, corpus_glob):
  config.data.source, config.data.text_files = 'text_files', corpus_glob
  config.train.update(steps=30, checkpoint_every=10, eval_every=30, log_every=1)
  return config


def _largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize('damage', ['truncate', 'remove', 'flip_bytes'])
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
  tiny_config, corpus_glob, tmp_path, capsys, damage
):
  config = _text_config(tiny_config, corpus_glob)
  _train(config, tmp_path, stop_at=20)
  data_file = _largest_file(tmp_path / 'checkpoints' / '20' / 'default')
  if damage == 'truncate':
    with open(data_file, 'r+b') as f:
      f.truncate(os.path.getsize(data_file) // 2)
  elif damage == 'remove':
    os.remove(data_file)
  else:
    with open(data_file, 'r+b') as f:
      f.seek(os.path.getsize(data_file) // 2)
      f.write(bytes(64))
  capsys.readouterr()
  _train(config, tmp_path)
  warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'checkpoint 20 is unusable' in warnings[0]
  assert [name.split('-')[0] for name in os.listdir(tmp_path / 'corrupt_checkpoints')] == ['20']
  with open(tmp_path / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f if 'train_loss' in line]
  assert steps[-20:] == list(range(11, 31))  # resumed from step 10


def test_no_restorable_checkpoint_stops_the_run_instead_of_starting_over(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob)
  _train(config, tmp_path, stop_at=10)
  os.remove(_largest_file(tmp_path / 'checkpoints' / '10' / 'default'))
  with pytest.raises(UserError, match='could be restored'):
    _train(config, tmp_path)
  assert os.listdir(tmp_path / 'corrupt_checkpoints')  # kept, not deleted
  # The same command again must not quietly start over on the now empty checkpoints/.
  with pytest.raises(UserError, match='no checkpoint left to resume from.*--start_over'):
    _train(config, tmp_path)
  _train(config, tmp_path, stop_at=10, start_over=True)  # said explicitly: from step 0
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', 'fingerprints.json']


def _tree_of_files(directory) -> dict[str, bytes]:
  return {
    os.path.relpath(os.path.join(root, name), directory): open(
      os.path.join(root, name), 'rb'
    ).read()
    for root, _, names in os.walk(directory)
    for name in names
  }


def test_a_checkpoint_of_other_shapes_is_a_config_error_and_nothing_is_touched(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob)
  _train(config, tmp_path, stop_at=20)
  before = _tree_of_files(tmp_path / 'checkpoints')
  with open(tmp_path / 'config.json') as f:
    saved = json.load(f)
  saved['model']['d_model'] = 64  # as if config.json were edited
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(saved, f)
  with pytest.raises(UserError, match='holds other parameters than this config builds'):
    load_run(str(tmp_path))  # what gptjax.sample and gptjax.evaluate read
  wide = configuration.model_config(configuration.read_config(str(tmp_path / 'config.json')), 262)
  abstract = jax.eval_shape(
    lambda: init_state(registry.build(wide), make_optimizer(config.train), config.seed)
  )
  mngr = checkpoint.manager(str(tmp_path), config.train.keep_checkpoints)
  try:  # what training's restore does with a state of other shapes
    with pytest.raises(UserError, match='nothing was changed'):
      checkpoint.restore_latest(mngr, abstract, jax.tree.map(lambda _: None, abstract))
  finally:
    mngr.close()
  assert not os.path.exists(tmp_path / 'corrupt_checkpoints')
  assert _tree_of_files(tmp_path / 'checkpoints') == before


def test_a_half_written_checkpoint_is_never_restored(tiny_config, corpus_glob, tmp_path):
  config = _text_config(tiny_config, corpus_glob)
  _train(config, tmp_path, stop_at=10)
  # What orbax leaves behind when killed mid-save: a step directory under a temporary name.
  half = tmp_path / 'checkpoints' / '20.orbax-checkpoint-tmp-1234'
  half.mkdir()
  (half / 'garbage').write_bytes(b'\0' * 100)
  run = trainer.Run(config, str(tmp_path))
  try:
    assert int(run.state.step) == 10
  finally:
    run.close()


def test_a_second_run_on_the_same_workdir_is_refused(tiny_config, corpus_glob, tmp_path):
  config = _text_config(tiny_config, corpus_glob)
  first = workdir_lib.lock(str(tmp_path))  # what a running run holds
  try:
    with pytest.raises(UserError, match='another run is using'):
      trainer.Run(config, str(tmp_path))
  finally:
    first.close()
  workdir_lib.lock(str(tmp_path)).close()  # free again once the first run is gone


def test_resuming_with_a_different_model_is_refused_but_new_step_budgets_are_fine(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob)
  _train(config, tmp_path, stop_at=10)
  changed = config.copy_and_resolve_references()
  changed.model.d_model = 64
  with pytest.raises(UserError, match=r'model.d_model 32 -> 64'):
    _train(changed, tmp_path)
  config.train.update(steps=40, eval_every=20)
  assert _train(config, tmp_path)['eval_loss'] > 0


def test_a_failed_start_does_not_pin_the_workdir_to_its_bad_config(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob)
  config.data.text_files = str(tmp_path / 'typo*.py')
  with pytest.raises(UserError, match='matches no files'):
    _train(config, tmp_path / 'w', stop_at=1)
  config.data.text_files = corpus_glob
  _train(config, tmp_path / 'w', stop_at=1)


@pytest.mark.parametrize('mode', ['stop', 'skip'])
def test_non_finite_steps_stop_the_run_or_are_skipped(tiny_config, corpus_glob, tmp_path, mode):
  config = _text_config(tiny_config, corpus_glob)
  config.train.update(lr=1e30, warmup_steps=0, log_every=1, nonfinite=mode)  # blows up at step 2
  if mode == 'stop':
    _train(config, tmp_path, stop_at=1)
    with pytest.raises(UserError, match='step 2: the loss is nan'):
      _train(config, tmp_path)
    assert _final_state(tmp_path)[0] == 1  # nothing after the last good state was saved
  else:
    _train(config, tmp_path)
    with open(tmp_path / 'metrics.jsonl') as f:
      skipped = sum(json.loads(line).get('skipped_steps', 0) for line in f)
    assert skipped == 29
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_final_state(tmp_path)[1]))


def test_out_of_memory_at_compile_time_names_what_drives_memory(
  tiny_config, corpus_glob, tmp_path, monkeypatch, capsys
):
  def no_memory(self):
    raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 9 GiB')

  monkeypatch.setattr(jax.stages.Lowered, 'compile', no_memory)
  with pytest.raises(UserError) as error:
    trainer.Run(_text_config(tiny_config, corpus_glob), str(tmp_path))
  for value in ('batch 8', 'seq_len 32', 'd_model 32', 'n_layers 2'):
    assert value in str(error.value)
  assert 'memory per device (estimate): params' in capsys.readouterr().out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_on_loopback_match_one_process_with_four_devices(corpus_glob, tmp_path):
  run = (
    '--config.train.steps=12',
    '--config.train.log_every=1',
    '--config.train.eval_every=12',
    '--config.train.checkpoint_every=6',
  )
  four = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  single = _run(tmp_path / 'single', corpus_glob, *run, env=four)
  assert single.returncode == 0, single.stderr
  two = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  port = _free_port()
  processes = [
    subprocess.Popen(
      _command(
        tmp_path / 'multi',
        corpus_glob,
        *run,
        '--config.distributed.initialize=True',
        f'--config.distributed.coordinator_address=127.0.0.1:{port}',
        '--config.distributed.num_processes=2',
        f'--config.distributed.process_id={i}',
      ),
      cwd=REPO,
      env=two,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert 'eval loss' in outputs[0][0] and 'eval loss' not in outputs[1][0]  # process 0 reports

  def losses(workdir):
    with open(workdir / 'metrics.jsonl') as f:
      return [json.loads(line)['train_loss'] for line in f if 'train_loss' in line]

  np.testing.assert_allclose(losses(tmp_path / 'multi'), losses(tmp_path / 'single'), rtol=2e-5)
  with open(tmp_path / 'multi' / 'checkpoints' / 'fingerprints.json') as f:
    assert sorted(json.load(f), key=int) == ['6', '12']  # both processes took part in saving
