"""Sweeps as cluster jobs: python -m gptjax.sweep run SWEEP.py --launcher submitit, with submitit's
local executor (real subprocesses), its debug executor (in this process) and a stand-in sbatch."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import write_corpus

from gptjax.errors import Preempted, UserError
from gptjax.scaling import cluster, sweep
from gptjax.training import metrics, trainer

submitit = pytest.importorskip('submitit', reason='the [cluster] extra is not installed')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP = """
from gptjax.configs import tiny


def get_config():
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.source, config.data.text_files = 'text_files', {corpus!r}
  config.train.update({train})
  return config


def get_runs():
  return {runs}
"""

# Two runs of one config, each a job of its own (max_stack=1): one is preempted, one is not.
TWINS = {
  'train': 'steps=120, warmup_steps=10, eval_every=60, checkpoint_every=40, log_every=10',
  'runs': "[('preempted', {}), ('uninterrupted', {})]",
}
# Two runs that differ in their seed: one stack, so one job.
SEEDS = {
  'train': 'steps=4, warmup_steps=1, eval_every=2, checkpoint_every=4, log_every=1',
  'runs': "[('s1', {'seed': 1}), ('s2', {'seed': 2})]",
}
# Two shapes: two jobs.
SHAPES = {
  'train': 'steps=4, warmup_steps=1, eval_every=2, checkpoint_every=4, log_every=1',
  'runs': "[('narrow', {'model.d_model': 16, 'model.n_heads': 1}), ('base', {})]",
}


def _sweep_file(tmp_path, sweep: dict) -> str:
  path = tmp_path / 'sweep.py'
  path.write_text(SWEEP.format(corpus=write_corpus(tmp_path / 'corpus'), **sweep))
  return str(path)


def _results(root) -> list[dict]:
  with open(os.path.join(root, 'results.jsonl')) as f:
    return [json.loads(line) for line in f]


def _final_state(workdir: str):
  """(step, every array) of the workdir's newest checkpoint, as saved."""
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  state = jax.tree.map(np.asarray, mngr.restore(step, args=ocp.args.StandardRestore()))
  mngr.close()
  return step, state


def _lock_holder(path: str) -> int | None:
  """The process holding the flock of `path` (a workdir's .lock: the process training it)."""
  stat = os.stat(path)
  file = f'{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}'
  with open('/proc/locks') as f:
    for line in f:
      fields = [field for field in line.split() if field != '->']
      if fields[1] == 'FLOCK' and fields[5] == file:
        return int(fields[4])
  return None


def _preempt_after_first_checkpoint(workdir: str, sent: list, timeout: float = 120) -> None:
  """Sends submitit's preemption signal to the job training `workdir` once it has a checkpoint."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(os.path.join(workdir, 'checkpoints', 'fingerprints.json')):
      pid = _lock_holder(os.path.join(workdir, '.lock'))
      if pid is not None:
        os.kill(pid, signal.SIGUSR2)
        sent.append(pid)
        return
    time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists('/proc/locks'), reason='finds the job by /proc/locks')
def test_a_preempted_job_requeues_and_its_run_ends_as_the_uninterrupted_one(tmp_path, capsys):
  sweep_path, root = _sweep_file(tmp_path, TWINS), str(tmp_path / 'runs')
  sent = []
  preempter = threading.Thread(
    target=_preempt_after_first_checkpoint, args=(os.path.join(root, 'preempted'), sent)
  )
  preempter.start()
  rows = cluster.submit_sweep(
    sweep_path, root, max_stack=1, cluster='local', gpus_per_job=0, poll_s=0.2
  )
  preempter.join()
  assert sent, 'the preempted run wrote no checkpoint'
  out = capsys.readouterr().out
  assert out.count(': job ') == 2 and 'submitted 2 jobs to local' in out

  preempted, uninterrupted = rows
  by_name = {row['name']: row for row in _results(root)}
  assert len(by_name) == len(_results(root)) == 2 and [by_name[r['name']] for r in rows] == rows
  # The trainer saved the step it was at when signalled, and the requeued job went on from there.
  assert 40 <= preempted['resumed_from_step'] < 120 and uninterrupted['resumed_from_step'] == 0
  for field in ('eval_loss', 'best_eval_loss', 'train_loss'):
    assert preempted[field] == uninterrupted[field]

  def evaluations(name):
    logged = metrics.read_metrics(os.path.join(root, name), 120)
    return [(r['step'], r['eval_loss']) for r in logged if 'eval_loss' in r]

  assert evaluations('preempted') == evaluations('uninterrupted') and evaluations('preempted')
  (step, final), (reference_step, reference) = (
    _final_state(os.path.join(root, name)) for name in ('preempted', 'uninterrupted')
  )
  assert step == reference_step == 120 and len(jax.tree.leaves(final)) > 20
  for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(reference), strict=True):
    np.testing.assert_array_equal(x, y)
  logs = {}
  for file in os.listdir(os.path.join(root, '_submitit')):
    if file.endswith('_log.out'):
      with open(os.path.join(root, '_submitit', file)) as f:
        logs[file] = f.read()
  log = next(text for text in logs.values() if 'preempted: training' in text)
  assert 'Caught signal SIGUSR2' in log and 'requeued: preempted resume' in log
  assert f'preempted: training (resuming from step {preempted["resumed_from_step"]})' in log

  # The local runner finds the jobs' runs finished.
  assert sweep.run_sweep(sweep_path, root, show_progress=False) == rows
  assert capsys.readouterr().out.count('finished, skipped') == 2 and len(_results(root)) == 2


def _command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.sweep', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_the_command_line_submits_a_stack_as_one_job_that_writes_its_rows(tmp_path):
  sweep_path, root = _sweep_file(tmp_path, SEEDS), str(tmp_path / 'runs')
  folder = str(tmp_path / 'logs')
  submit = ['run', sweep_path, '--root', root, '--launcher', 'submitit', '--cluster', 'local']
  options = ['--gpus_per_job', '0', '--submitit_folder', folder, '--partition', 'gpu']
  result = _command(*submit, *options, '--slurm_option', 'qos')
  assert result.returncode == 2 and "--slurm_option 'qos' is not KEY=VALUE" in result.stderr

  result = _command(*submit, *options, '--slurm_option', 'qos=high')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  jobs = [line for line in lines if ': job ' in line]
  assert len(jobs) == 2 and all(line.endswith('(stacked with 1 more)') for line in jobs)
  assert len({line.split(': job ')[1] for line in jobs}) == 1  # the same job
  assert f'submitted 1 job to local, their output in {folder}' in result.stdout
  assert lines[-1] == f'2 runs finished; results in {root}/results.jsonl'
  rows = _results(root)
  assert [row['name'] for row in rows] == ['s1', 's2'] and {row['stacked'] for row in rows} == {2}
  assert rows[0]['eval_loss'] != rows[1]['eval_loss']
  assert any(f.endswith('_log.out') for f in os.listdir(folder))

  result = _command(*submit, *options)  # again: nothing left to submit
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('finished, skipped') == 2 and 'submitted' not in result.stdout
  assert len(_results(root)) == 2


def test_the_debug_cluster_runs_the_jobs_here_and_they_write_the_rows(tmp_path, capsys):
  sweep_path, root = _sweep_file(tmp_path, SHAPES), str(tmp_path / 'runs')
  rows = cluster.submit_sweep(sweep_path, root, cluster='debug', gpus_per_job=0, poll_s=0)
  assert [row['name'] for row in rows] == ['narrow', 'base'] and _results(root) == rows
  assert rows[0]['N'] < rows[1]['N'] and all(row['steps'] == 4 for row in rows)
  out = capsys.readouterr().out
  assert '[1/2] narrow: job ' in out and '[2/2] base: job ' in out
  assert 'submitted 2 jobs to debug' in out and 'eval loss' in out
  assert os.path.isdir(os.path.join(root, '_submitit'))
  assert cluster.submit_sweep(sweep_path, root, cluster='debug', gpus_per_job=0) == rows
  assert capsys.readouterr().out.count('finished, skipped') == 2


def test_slurm_jobs_are_one_array_with_the_options_given(tmp_path, monkeypatch, capsys):
  """A stand-in sbatch records the script submitit writes (no SLURM here)."""
  bin_dir, record = tmp_path / 'bin', tmp_path / 'sbatch_script'
  bin_dir.mkdir()
  (bin_dir / 'sbatch').write_text(f'#!/bin/sh\ncp "$1" {record}\necho "Submitted batch job 4242"\n')
  (bin_dir / 'srun').write_text('#!/bin/sh\n')
  for tool in ('sbatch', 'srun'):
    os.chmod(bin_dir / tool, 0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  sweep_path, root = _sweep_file(tmp_path, SHAPES), str(tmp_path / 'runs')
  rows = cluster.submit_sweep(
    sweep_path,
    root,
    partition='gpu',
    timeout_min=30,
    gpus_per_job=2,
    cpus_per_job=8,
    array_parallelism=1,
    slurm_options={'account': 'lab', 'qos': 'high'},
    wait=False,
  )
  assert rows == []
  out = capsys.readouterr().out
  assert '[1/2] narrow: job 4242_0' in out and '[2/2] base: job 4242_1' in out
  assert 'submitted 2 jobs to slurm' in out and 'run this sweep again' in out
  script = record.read_text()
  for line in (
    '#SBATCH --partition=gpu',
    '#SBATCH --time=30',
    '#SBATCH --gpus-per-node=2',
    '#SBATCH --cpus-per-task=8',
    '#SBATCH --array=0-1%1',
    '#SBATCH --signal=USR2@90',
    '#SBATCH --account=lab',
    '#SBATCH --qos=high',
    '#SBATCH --job-name=gptjax_sweep',
  ):
    assert line in script.splitlines(), script
  assert f'{root}/_submitit' in script
  for job in ('4242_0', '4242_1'):  # what the array's tasks will run
    job_file = os.path.join(root, '_submitit', f'{job}_submitted.pkl')
    assert isinstance(submitit.helpers.DelayedSubmission.load(job_file).function, cluster.SweepJob)
  # The workdirs are seeded before the jobs start: the shared data is made here, once.
  assert os.path.samefile(f'{root}/_shared/data/train.bin', f'{root}/base/data/train.bin')


def test_without_slurm_or_submitit_it_is_one_error(tmp_path, monkeypatch):
  sweep_path, root = _sweep_file(tmp_path, SHAPES), str(tmp_path / 'runs')
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun
  with pytest.raises(UserError, match='cannot submit to slurm from here.*--cluster local'):
    cluster.submit_sweep(sweep_path, root)
  assert not os.path.exists(f'{root}/_shared')  # refused before making anything
  monkeypatch.setitem(sys.modules, 'submitit', None)  # as if not installed
  with pytest.raises(UserError, match=r'needs the submitit package.*gptjax\[cluster\]'):
    cluster.submit_sweep(sweep_path, root)


class _Preemption(trainer.Preemption):
  """The trainer's SIGTERM handler without its timer (which ends the process after grace_s)."""

  def _on_sigterm(self, signum, frame) -> None:
    self.requested = True


def test_the_preemption_signal_stops_the_trainer_then_requeues():
  """_requeued_when_signalled with a stand-in for submitit's handler of its signal."""
  requeued = []
  stand_in = lambda signum, frame: requeued.append(signum)
  previous = signal.signal(signal.SIGUSR2, stand_in)
  try:
    # In training: the trainer's SIGTERM flag is set, and the job requeues once it raised Preempted.
    with pytest.raises(Preempted):
      with cluster._requeued_when_signalled():
        preemption = _Preemption(grace_s=60)
        try:
          os.kill(os.getpid(), signal.SIGUSR2)
          assert preemption.requested and not requeued
          raise Preempted('stopped by SIGTERM after step 3; checkpoint 3 saved')
        finally:
          preemption.close()
    assert requeued == [signal.SIGUSR2]
    # Not in training: requeued at once.
    with cluster._requeued_when_signalled():
      os.kill(os.getpid(), signal.SIGUSR2)
      assert len(requeued) == 2
    # SIGTERM alone (the trainer stopped, no preemption signal): not requeued.
    with pytest.raises(Preempted, match='not requeued'):
      with cluster._requeued_when_signalled():
        raise Preempted('stopped by SIGTERM after step 3; checkpoint 3 saved')
    assert len(requeued) == 2
    assert signal.getsignal(signal.SIGUSR2) is stand_in  # restored
  finally:
    signal.signal(signal.SIGUSR2, previous)
