"""A sweep's runs as cluster jobs through submitit (the [cluster] extra):

  python -m gptjax.sweep run experiments/X.py --root runs/X --launcher submitit \\
    --partition gpu --timeout_min 240 --gpus_per_job 1 --array_parallelism 8

Each stack the local runner would train as one program (sweep._stacks), or a run alone, is one
job (on SLURM one task of a job array, at most array_parallelism of them running at once). A job
trains in the same resumable workdirs ROOT/<name> as the local runner and appends each run's row
to ROOT/results.jsonl itself (sweep.append_row, under a lock), so rows get written whether or not
the submitting program still waits. That program first makes the shared tokenizer and data cache
(ROOT/_shared) and seeds the workdirs, so a data problem shows once, at once; then it submits the
jobs and waits for them, printing each run's row as its job ends (stopping it stops the waiting,
not the jobs). submitit keeps its job files and each job's output in the folder (ROOT/_submitit).

Preemption and time limits follow submitit's protocol: SLURM sends the job submitit's signal
(USR2, or $SUBMITIT_PREEMPT_SIGNAL) signal_delay_s (90 s) before its time limit, and when it
preempts the job where the cluster sends user signals on preemption; the trainer then saves a
checkpoint of its current step, as it does on SIGTERM, and the job calls submitit's handler, which
calls SweepJob.checkpoint() and requeues the job: it resumes every run from its checkpoint. A
timeout counts against MAX_TIMEOUTS; preemptions do not. SIGTERM alone (scancel, or a preemption
without the signal) saves and stops the runs without requeueing them; SLURM's own requeue or
running the sweep again resumes them. A job killed outright (SIGKILL, a node lost) resumes from
its last periodic checkpoint when the sweep runs again and submits the runs that have no row.

cluster is submitit's: 'slurm' (sbatch), 'local' (jobs as subprocesses of this machine: for trying
it out, and the tests) or 'debug' (each job in this process, in turn, with pdb on an error).
"""

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import ml_collections
from absl import logging

from gptjax.errors import Preempted, UserError
from gptjax.scaling import sweep
from gptjax.training import trainer

CLUSTERS = ('slurm', 'local', 'debug')
FOLDER = '_submitit'  # in ROOT: submitit's job files and logs
MAX_TIMEOUTS = 10  # how many times a job may reach its time limit and be requeued


class SweepJob:
  """One job of a sweep: trains its runs (a stack, or one run) in ROOT/<name> and appends their
  rows to ROOT/results.jsonl; returns the rows. The callable submitit pickles and runs; its
  checkpoint() is what submitit calls to requeue it when preempted or near its time limit."""

  def __init__(
    self,
    root: str,
    group: list[tuple[str, ml_collections.ConfigDict]],
    convention: str = '6ND',
    labels: dict[str, str] | None = None,
  ):
    self.root, self.group, self.convention = os.path.abspath(root), group, convention
    self.labels = labels or {}

  def __call__(self) -> list[dict]:
    logging.set_verbosity(logging.WARNING)  # orbax and jax log every step of a save at INFO
    sweep._cache_compilations(self.root)
    with _requeued_when_signalled():
      rows = sweep.finished_rows(self.root)
      # A run whose row a previous attempt of this job wrote is not evaluated again.
      todo = [(name, c) for name, c in self.group if not sweep.is_finished(rows.get(name), c)]
      if todo:
        for row in sweep.train_group(todo, self.root, self.convention, False, self.labels):
          rows[row['name']] = row
      return [rows[name] for name, _ in self.group]

  def checkpoint(self) -> Any:
    """The submission that continues this job: the same job, which resumes its runs from the
    checkpoints in their workdirs (submitit's checkpointing protocol)."""
    import submitit  # pylint: disable=import-outside-toplevel  # the [cluster] extra

    names = ', '.join(name for name, _ in self.group)
    print(f'requeued: {names} resume from their last checkpoints', flush=True)
    return submitit.helpers.DelayedSubmission(self)


@contextlib.contextmanager
def _requeued_when_signalled() -> Iterator[None]:
  """Within a job submitit started: its preemption signal stops the trainer as SIGTERM would (a
  checkpoint of the current step, then Preempted), and then requeues the job through submitit's
  own handler (which calls SweepJob.checkpoint); outside training it requeues at once, since the
  workdirs then hold all there is to keep."""
  import submitit  # pylint: disable=import-outside-toplevel  # the [cluster] extra

  number = getattr(signal, 'SIG' + submitit.JobEnvironment.USR_SIG)
  requeue = signal.getsignal(number)  # submitit's: checkpoint(), requeue, exit
  if not callable(requeue):  # not in a job's process (the debug cluster runs jobs in this one)
    yield
    return
  signalled = []

  def on_signal(signum, frame) -> None:
    signalled.append(signum)
    stop = signal.getsignal(signal.SIGTERM)
    if isinstance(getattr(stop, '__self__', None), trainer.Preemption):
      stop(signum, frame)  # the trainer saves after its current step and raises Preempted
    else:
      requeue(signum, frame)

  signal.signal(number, on_signal)
  try:
    yield
  except Preempted as e:
    if not signalled:  # SIGTERM alone: a cancelled job, not one to requeue
      raise Preempted(f"{e}; not requeued (SIGTERM without submitit's {number.name})") from None
    print(e, flush=True)
    requeue(number, None)  # exits the job's process
    raise
  finally:
    signal.signal(number, requeue)


def submit_sweep(
  sweep_path: str,
  root: str,
  convention: str = '6ND',
  max_stack: int = 16,
  only: str = '',
  cluster: str = 'slurm',
  folder: str = '',
  partition: str = '',
  timeout_min: int = 240,
  gpus_per_job: int = 1,
  cpus_per_job: int = 0,
  array_parallelism: int = 256,
  slurm_options: dict[str, str] | None = None,
  wait: bool = True,
  poll_s: float = 2.0,
) -> list[dict]:
  """Submits every run of the sweep that has no row yet as submitit jobs on `cluster`, a job per
  stack (see sweep.run_sweep for stacks, only and convention), and waits for them (unless not
  `wait`): returns the rows of all runs the jobs and earlier runs finished, in the sweep's order,
  and raises a UserError naming the jobs that failed. folder: submitit's (default ROOT/_submitit);
  gpus_per_job: the GPUs of a job's node it uses (0: none); cpus_per_job: 0 leaves it to the
  cluster; slurm_options: more sbatch options (account, qos, constraint, mem, ...)."""
  submitit = _import_submitit()
  if cluster not in CLUSTERS:
    raise UserError(f'unknown cluster {cluster!r}; use one of {", ".join(CLUSTERS)}')
  base, configs, rows, to_train = sweep.plan(
    sweep_path, root, convention, only, device_count=max(gpus_per_job, 1)
  )
  labels = sweep.run_labels(configs)
  if not to_train:
    return [rows[name] for name, _ in configs]
  folder = folder or os.path.join(root, FOLDER)
  try:
    executor = submitit.AutoExecutor(
      folder,
      cluster=cluster,
      slurm_max_num_timeout=MAX_TIMEOUTS,
      local_max_num_timeout=MAX_TIMEOUTS,
    )
  except RuntimeError as e:  # no SLURM here
    raise UserError(
      f'submitit cannot submit to {cluster} from here: {e} (--cluster local runs the jobs on '
      'this machine)'
    ) from None
  parameters = {
    'name': f'gptjax_{os.path.splitext(os.path.basename(sweep_path))[0]}',
    'timeout_min': timeout_min,
    'gpus_per_node': gpus_per_job,
    'nodes': 1,
    'tasks_per_node': 1,
    'slurm_array_parallelism': array_parallelism,
  }
  if cpus_per_job:
    parameters['cpus_per_task'] = cpus_per_job
  if partition:
    parameters['slurm_partition'] = partition
  if slurm_options:
    parameters['slurm_additional_parameters'] = dict(slurm_options)
  executor.update_parameters(**parameters)
  groups = sweep.seeded_stacks(base, to_train, root, max_stack)
  try:
    jobs = executor.submit_array([SweepJob(root, group, convention, labels) for group in groups])
  except Exception as e:  # pylint: disable=broad-except  # sbatch refused the jobs, say
    raise UserError(f'submitit could not submit the jobs to {cluster}: {e}') from None
  for group, job in zip(groups, jobs):
    stack = f' (stacked with {len(group) - 1} more)' if len(group) > 1 else ''
    for name, _ in group:
      print(f'{labels[name]}: job {job.job_id}{stack}', flush=True)
  print(
    f'submitted {len(jobs)} job{"s" * (len(jobs) > 1)} to {cluster}, their output in {folder}; '
    f"each appends its runs' rows to {os.path.join(root, 'results.jsonl')}",
    flush=True,
  )
  if not wait:
    print(
      'not waiting for them: once they are done, run this sweep again (with either launcher) '
      'to see every row; it skips the runs with rows and submits or trains the rest',
      flush=True,
    )
    return [rows[name] for name, _ in configs if name in rows]
  failed = _wait(list(zip(groups, jobs)), rows, labels, poll_s)
  if failed:
    raise UserError(
      f'{len(failed)} of {len(jobs)} jobs failed ({"; ".join(failed)}); running the sweep again '
      'submits their runs again (they resume from their last checkpoints)'
    )
  return [rows[name] for name, _ in configs]


def _wait(pending: list, rows: dict[str, dict], labels: dict[str, str], poll_s: float) -> list:
  """Waits for the (group, job) of `pending`, printing each run's row as its job ends and adding
  it to `rows`; returns one line for each job that failed."""
  failed = []
  try:
    while pending:
      for group, job in [item for item in pending if item[1].done()]:
        pending.remove((group, job))
        names = ', '.join(name for name, _ in group)
        try:
          job_rows = job.result()
        except Exception as e:  # pylint: disable=broad-except  # the job's error, as text
          lines = str(e).strip().splitlines() or [type(e).__name__]
          failed.append(f'job {job.job_id} of {names}: {lines[-1]} (its log: {job.paths.stderr})')
          print(f'{labels[group[0][0]]}: job {job.job_id} failed: {lines[-1]}', flush=True)
          continue
        for row in job_rows:
          rows[row['name']] = row
          print(sweep.outcome_line(labels[row['name']], row), flush=True)
      if pending:
        time.sleep(poll_s)
  except KeyboardInterrupt:
    raise UserError(
      f'stopped waiting for {len(pending)} jobs; on a cluster they go on and append their rows '
      '(run the sweep again afterwards to see them all)'
    ) from None
  return failed


def _import_submitit():
  try:
    import submitit  # pylint: disable=import-outside-toplevel  # the [cluster] extra
  except ImportError as e:
    raise UserError(
      f'--launcher submitit needs the submitit package ({e}): pip install "gptjax[cluster]"'
    ) from None
  return submitit
