"""Run a sweep: python -m gptjax.sweep run SWEEP.py [--root ROOT] [--list] [--convention 6ND]
[--max_stack 16] [--only REGEX]

Trains every run of the sweep file that has no row in ROOT/results.jsonl yet, each in
ROOT/<name> (ROOT defaults to runs/<sweep name>), runs of one model shape as stacks of up to
--max_stack runs in one program (gptjax/training/stacked.py), and appends a row per finished run;
--list prints one python -m gptjax.main command per run instead. gptjax/scaling/sweep.py says
what a sweep file holds, how runs share a tokenizer and data cache, and what a row records.
"""

import os

from absl import flags

from gptjax import cli
from gptjax.models import accounting
from gptjax.scaling import sweep

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
  rows = sweep.run_sweep(
    sweep_path, root, _CONVENTION.value, max_stack=_MAX_STACK.value, only=_ONLY.value
  )
  print(f'{len(rows)} runs finished; results in {os.path.join(root, "results.jsonl")}')


if __name__ == '__main__':
  cli.run(main)
