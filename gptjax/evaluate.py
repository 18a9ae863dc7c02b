"""Zero- and few-shot evaluation of a pre-trained run, as GPT-2 and GPT-3 do it.

  python -m gptjax.evaluate --workdir runs/default --task stdlib_next_line --shots 4 --json

--task is a built-in task, or JSONL file(s) of a multiple-choice or cloze task (gptjax.tasks).
Each example's prompt holds --shots demonstrations drawn with --seed, each followed by
--separator; the accuracy (and, for multiple choice, the length-normalised one) is printed with
its standard error, or all of the result as one JSON object with --json. How prompts are built
and scored: gptjax/downstream/few_shot.py.
"""

import json

from absl import flags

from gptjax import cli
from gptjax.downstream import few_shot, tasks
from gptjax.training.state import load_run

_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'The pre-training run (config.json, tokenizer, checkpoints/).'
)
_TASK = flags.DEFINE_string(
  'task',
  None,
  'A built-in task, or JSONL file(s) of a multiple-choice or cloze task (see gptjax.tasks).',
)
_SHOTS = flags.DEFINE_integer('shots', 0, 'Demonstrations in each prompt.', lower_bound=0)
_SPLIT = flags.DEFINE_string('split', '', 'Split to evaluate; default test, else validation.')
_SEED = flags.DEFINE_integer(
  'seed', 0, 'Which demonstrations (and which examples a built-in task has).'
)
_LIMIT = flags.DEFINE_integer('limit', 0, 'Only the first N examples; 0 = all.', lower_bound=0)
_SEPARATOR = flags.DEFINE_string(
  'separator',
  few_shot.SEPARATOR.encode('unicode_escape').decode(),
  r'Text after each demonstration, with Python escapes.',
)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Sequences scored at once.', lower_bound=1)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
flags.mark_flags_as_required(['workdir', 'task'])


def main(argv: list[str]) -> None:
  cli.positional(argv)
  try:
    separator = _SEPARATOR.value.encode('latin-1', 'backslashreplace').decode('unicode_escape')
  except UnicodeDecodeError as e:  # a bad escape: \x, \N{...}, a trailing backslash
    cli.fail(
      f"--separator='{_SEPARATOR.value}': {e.reason} at character {e.start + 1}; write a "
      "backslash as \\\\ (--separator='\\n\\n' is a blank line)",
      status=2,
    )
  task = tasks.load_task(_TASK.value, _SEED.value)
  tokenizer, model, params = load_run(_WORKDIR.value)
  result = few_shot.evaluate_task(
    tokenizer,
    model,
    params,
    task,
    _SHOTS.value,
    _SEED.value,
    _SPLIT.value,
    _LIMIT.value,
    separator,
    _BATCH_SIZE.value,
  )
  if _JSON.value:
    print(json.dumps(result))
    return
  norm = (
    f', length-normalised {result["accuracy_norm"]:.4f} ± {result["stderr_norm"]:.4f}'
    if 'accuracy_norm' in result
    else ''
  )
  print(
    f'{result["task"]} ({result["split"]}, {result["shots"]}-shot, n={result["n"]}): accuracy '
    f'{result["accuracy"]:.4f} ± {result["stderr"]:.4f}{norm}'
  )


if __name__ == '__main__':
  cli.run(main)
