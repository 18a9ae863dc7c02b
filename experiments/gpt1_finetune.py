"""GPT-1's claim in miniature: generative pre-training, then fine-tuning, beats training the same
model from scratch on the task; and the auxiliary LM loss (lambda = 0.5) against none.

  python -m experiments.gpt1_finetune /work/sweep_runs/chinchilla_isoflop/C8.0e11_L3_d96

For each built-in task and each of four variants, pre-trained or random weights (the same model
and tokenizer) x lm_coef 0.5 or 0, fine-tunes with gptjax/configs/finetune.py:cpu (override with
--set finetune.FIELD=VALUE) into ROOT/<task>/<variant>, and keeps the best epoch by validation
accuracy. A variant whose results.json exists is not run again. Writes
experiments/results/gpt1_finetune/results.json (validation and test accuracy of each run, the
test accuracy's standard error) and gpt1_finetune.png (test accuracy per task and variant).
"""

import argparse
import json
import math
import os

import numpy as np
from absl import logging
from matplotlib.figure import Figure

from gptjax.cli import reported
from gptjax.configs import finetune as finetune_config
from gptjax.downstream import finetuning
from gptjax.errors import UserError
from gptjax.scaling.sweep import parse_override, run_config

NAME = 'gpt1_finetune'
VARIANTS = {  # name -> (random_init, lm_coef)
  'pretrained_lm0.5': (False, 0.5),
  'pretrained_lm0': (False, 0.0),
  'scratch_lm0.5': (True, 0.5),
  'scratch_lm0': (True, 0.0),
}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('pretrained', help='the pre-training workdir to fine-tune')
  parser.add_argument(
    '--tasks',
    default='stdlib_test_or_lib,stdlib_same_file,stdlib_next_line',
    help='comma-separated built-in tasks (or JSONL specs)',
  )
  parser.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated')
  parser.add_argument('--root', default=os.path.join('runs', NAME), help='fine-tuning workdirs')
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='a config override, e.g. finetune.epochs=2 (repeatable)',
  )
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    unknown = [v for v in args.variants.split(',') if v not in VARIANTS]
    if unknown:
      raise UserError(f'unknown variant {unknown[0]!r}; use {", ".join(VARIANTS)}')
    base = run_config(finetune_config.get_config('cpu'), dict(map(parse_override, args.set)), NAME)
    rows = []
    for task in args.tasks.split(','):
      for variant in args.variants.split(','):
        random_init, lm_coef = VARIANTS[variant]
        workdir = os.path.join(args.root, os.path.basename(task.rstrip('/')), variant)
        done = os.path.join(workdir, 'results.json')
        if not os.path.exists(done):
          print(f'{task} / {variant}', flush=True)
          config = run_config(
            base,
            {
              'finetune.init_from': args.pretrained,
              'finetune.task': task,
              'finetune.random_init': random_init,
              'finetune.lm_coef': lm_coef,
            },
            variant,
          )
          finetuning.finetune(config, workdir)
        with open(done) as f:
          result = json.load(f)
        p, n = (
          result.get('test_accuracy', result['validation_accuracy']),
          result.get('n_test', result['n_validation']),
        )
        rows.append(
          {
            'task': task,
            'variant': variant,
            'random_init': random_init,
            'lm_coef': lm_coef,
            'workdir': workdir,
            'test_stderr': math.sqrt(p * (1 - p) / n),
            **result,
          }
        )
        print(
          f'{task} / {variant}: validation {result["validation_accuracy"]:.3f}, test '
          f'{p:.3f} ± {rows[-1]["test_stderr"]:.3f}',
          flush=True,
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump(
        {'pretrained': args.pretrained, 'config': base.to_dict(), 'rows': rows}, f, indent=1
      )
    _plot(rows, os.path.join(args.out, f'{NAME}.png'))
    print(f'wrote {args.out}/results.json and {NAME}.png')


def _plot(rows: list[dict], path: str) -> None:
  task_names = list(dict.fromkeys(r['task'] for r in rows))
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  fig = Figure(figsize=(2.5 + 2 * len(task_names), 4), layout='constrained')
  ax = fig.subplots()
  width = 0.8 / len(variants)
  for v, variant in enumerate(variants):
    cells = [
      next(r for r in rows if r['task'] == t and r['variant'] == variant) for t in task_names
    ]
    ax.bar(
      np.arange(len(task_names)) + (v - (len(variants) - 1) / 2) * width,
      [c.get('test_accuracy', c['validation_accuracy']) for c in cells],
      width,
      yerr=[c['test_stderr'] for c in cells],
      capsize=3,
      label=variant,
    )
  ax.set_xticks(np.arange(len(task_names)), [os.path.basename(t.rstrip('/')) for t in task_names])
  ax.set(
    ylabel='test accuracy (best validation epoch)',
    ylim=(0, 1.15),
    title='fine-tuning: pre-trained vs from scratch, with and without the LM loss',
  )
  ax.legend(fontsize='small', loc='upper right', ncols=2)
  fig.savefig(path, dpi=120)


if __name__ == '__main__':
  main()
