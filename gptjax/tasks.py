"""Write the built-in tasks as JSONL, to read, share or edit (DIR/<task>/<split>.jsonl).

  python -m gptjax.tasks build --out DIR [--tasks stdlib_next_line,stdlib_cloze] [--seed 0]

A built-in task is a pure function of its name and seed, so the files hold the examples that
gptjax.finetune and gptjax.evaluate use under that name and seed. What each task asks, and why
its examples come from documents pre-training holds out: gptjax/downstream/tasks.py.
"""

import os

from absl import flags

from gptjax import cli
from gptjax.downstream import tasks
from gptjax.errors import UserError

_OUT = flags.DEFINE_string('out', None, 'Directory to write the tasks into.')
_TASKS = flags.DEFINE_list('tasks', list(tasks.STDLIB_TASKS), 'Comma-separated built-in tasks.')
_SEED = flags.DEFINE_integer('seed', 0, 'Which documents and lines are chosen.')
_MAX_PER_DOCUMENT = flags.DEFINE_integer(
  'max_per_document', 100, 'Examples per document.', lower_bound=1
)
flags.mark_flag_as_required('out')


def main(argv: list[str]) -> None:
  (command,) = cli.positional(argv, 'command')
  if command != 'build':
    cli.fail(f'unknown command {command!r}; the command is build (see --help)', status=2)
  unknown = [n for n in _TASKS.value if n not in tasks.STDLIB_TASKS]
  if unknown:
    raise UserError(f'unknown built-in task {unknown[0]!r}; use {", ".join(tasks.STDLIB_TASKS)}')
  documents = tasks.held_out_documents()
  for name in _TASKS.value:
    task = tasks.build_stdlib_task(name, _SEED.value, _MAX_PER_DOCUMENT.value, documents)
    counts = tasks.write_jsonl(task, os.path.join(_OUT.value, name))
    print(
      f'{name} ({tasks.STDLIB_TASKS[name]}): ' + ', '.join(f'{s} {n}' for s, n in counts.items())
    )


if __name__ == '__main__':
  cli.run(main)
