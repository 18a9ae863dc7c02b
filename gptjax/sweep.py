"""Run a sweep: python -m gptjax.sweep run SWEEP.py [--root ROOT] [--list] [--convention 6ND]
[--max_stack 16] [--only REGEX] [--launcher local|submitit [--cluster slurm|local|debug]
[--partition P] [--timeout_min 240] [--gpus_per_job 1] [--cpus_per_job C] [--array_parallelism J]
[--slurm_option KEY=VALUE ...] [--submitit_folder DIR] [--nowait]]

Trains every run of the sweep file that has no row in ROOT/results.jsonl yet, each in
ROOT/<name> (ROOT defaults to runs/<sweep name>), runs of one model shape as stacks of up to
--max_stack runs in one program (gptjax/training/stacked.py), and appends a row per finished run;
--list prints one python -m gptjax.main command per run instead. gptjax/scaling/sweep.py says
what a sweep file holds, how runs share a tokenizer and data cache, and what a row records.
--launcher submitit trains each stack (or lone run) as a SLURM job instead, which writes its rows
itself, and waits for the jobs; gptjax/scaling/cluster.py says how preempted jobs resume.
"""

import os

from absl import flags

from gptjax import cli
from gptjax.models import accounting
from gptjax.scaling import cluster, sweep

_ROOT = flags.DEFINE_string('root', '', 'Directory of the runs (default runs/<sweep name>).')
_LIST = flags.DEFINE_bool(
  'list', False, 'Print one python -m gptjax.main command per run instead of running them.'
)
_MAX_STACK = flags.DEFINE_integer(
  'max_stack',
  16,
  'Most runs of one shape trained together as one stacked program; 1 trains one run at a time.',
  lower_bound=1,
)
_ONLY = flags.DEFINE_string(
  'only', '', 'Train only the runs whose names match this regular expression (re.search).'
)
_LAUNCHER = flags.DEFINE_enum(
  'launcher',
  'local',
  ['local', 'submitit'],
  'local: train the runs here, one stack after another; submitit: a job per stack, through '
  'submitit (the [cluster] extra).',
)
_CLUSTER = flags.DEFINE_enum(
  'cluster',
  'slurm',
  list(cluster.CLUSTERS),
  'Where --launcher submitit runs the jobs: slurm (sbatch), local (subprocesses of this machine, '
  'to try it out) or debug (in this process, one after another, pdb on an error).',
)
_PARTITION = flags.DEFINE_string('partition', '', 'The SLURM partition of the jobs.')
_TIMEOUT_MIN = flags.DEFINE_integer(
  'timeout_min',
  240,
  "A job's time limit in minutes; near it the job saves, requeues itself and resumes (up to "
  f'{cluster.MAX_TIMEOUTS} times).',
  lower_bound=1,
)
_GPUS_PER_JOB = flags.DEFINE_integer(
  'gpus_per_job', 1, 'GPUs of one node each job uses (0: none).', lower_bound=0
)
_CPUS_PER_JOB = flags.DEFINE_integer(
  'cpus_per_job', 0, "CPUs each job asks for (0: the cluster's default).", lower_bound=0
)
_ARRAY_PARALLELISM = flags.DEFINE_integer(
  'array_parallelism', 256, 'Most jobs of the sweep running at once (SLURM).', lower_bound=1
)
_SLURM_OPTIONS = flags.DEFINE_multi_string(
  'slurm_option',
  [],
  'KEY=VALUE: one more sbatch option of the jobs, as --KEY=VALUE (account=..., qos=..., '
  'constraint=..., mem=...).',
)
_SUBMITIT_FOLDER = flags.DEFINE_string(
  'submitit_folder', '', "submitit's folder of job files and logs (default ROOT/_submitit)."
)
_WAIT = flags.DEFINE_bool(
  'wait',
  True,
  'Wait for the jobs and print their rows (--nowait: return once submitted; the jobs write '
  'their rows either way).',
)
_CONVENTION = flags.DEFINE_enum(
  'convention',
  '6ND',
  list(accounting.COMPUTE_CONVENTIONS),
  'How the rows count training compute C.',
)


def main(argv: list[str]) -> None:
  command, sweep_path = cli.positional(argv, 'run', 'sweep')
  if command != 'run':
    cli.fail(
      f'unknown command {command!r}; the command is run: python -m gptjax.sweep run '
      'SWEEP.py (see --help)',
      status=2,
    )
  root = _ROOT.value or os.path.join('runs', os.path.splitext(os.path.basename(sweep_path))[0])
  if _LIST.value:
    print('\n'.join(sweep.list_commands(sweep_path, root)))
    return
  if _LAUNCHER.value == 'submitit':
    options = {}
    for option in _SLURM_OPTIONS.value:
      key, equals, value = option.partition('=')
      if not (key and equals):
        cli.fail(f'--slurm_option {option!r} is not KEY=VALUE', status=2)
      options[key.removeprefix('--')] = value
    rows = cluster.submit_sweep(
      sweep_path,
      root,
      _CONVENTION.value,
      max_stack=_MAX_STACK.value,
      only=_ONLY.value,
      cluster=_CLUSTER.value,
      folder=_SUBMITIT_FOLDER.value,
      partition=_PARTITION.value,
      timeout_min=_TIMEOUT_MIN.value,
      gpus_per_job=_GPUS_PER_JOB.value,
      cpus_per_job=_CPUS_PER_JOB.value,
      array_parallelism=_ARRAY_PARALLELISM.value,
      slurm_options=options,
      wait=_WAIT.value,
    )
  else:
    rows = sweep.run_sweep(
      sweep_path, root, _CONVENTION.value, max_stack=_MAX_STACK.value, only=_ONLY.value
    )
  print(f'{len(rows)} runs finished; results in {os.path.join(root, "results.jsonl")}')


if __name__ == '__main__':
  cli.run(main)
