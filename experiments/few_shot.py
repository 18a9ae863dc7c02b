"""GPT-3's claim in miniature: few-shot accuracy rises with the number of demonstrations k.

  python -m experiments.few_shot '/work/sweep_runs/chinchilla_isoflop/C8.0e11_*' --shots 0,1,2,4,8
  python -m experiments.few_shot RUNS --tasks stdlib_rename_initials,stdlib_rename_camel,\
stdlib_rename_reversed,stdlib_rename_upper

Evaluates each pre-training workdir given (the larger models, for the claim) on built-in
multiple-choice and cloze tasks (--tasks; by default stdlib_next_line and stdlib_cloze) with k
demonstrations from the task's train split (fixed seed, blank-line separator; see
gptjax.evaluate) and writes experiments/results/few_shot/results.json (one row per model, task
and k, with the share of prompts cut to fit the context) and few_shot.png (accuracy against k,
one line per model). With a context of 128 tokens a few demonstrations already fill it: the
prompt keeps the most recent ones, and `truncated` says how often that happened.

The default tasks can be answered from the context alone, so demonstrations only show the format.
In the four stdlib_rename_* tasks (gptjax/downstream/tasks.py) only the demonstrations say which
renaming of an identifier is asked for: evaluated together, their mean zero-shot accuracy is
exactly chance (1/4) for any model, and what k-shot accuracy gains over it is read from the
demonstrations (8 of them fit a 512-token context with the byte tokenizer; 128 holds 2 or 3).
With all four evaluated, results.json's rename_summary pools them per model and k
(length-normalised accuracy, its gain over k = 0 with standard errors; the summed score favours
the shortest renaming whatever the demonstrations say), and the plot has a panel for it.
"""

import json
import math
import os

from absl import logging
from matplotlib.figure import Figure

from experiments.zero_shot_size import (
  evaluation_parser,
  expand,
  model_row,
  plot_accuracy,
)
from gptjax.cli import reported
from gptjax.downstream import few_shot, tasks
from gptjax.errors import UserError
from gptjax.training.state import load_run

NAME = 'few_shot'


def main(argv: list[str] | None = None) -> None:
  parser = evaluation_parser(NAME, __doc__)
  parser.add_argument('--shots', default='0,1,2,4,8', help='comma-separated k')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    shots = [int(k) for k in args.shots.split(',')]
    if min(shots) < 0:
      raise UserError('--shots must be >= 0')
    workdirs = expand(args.workdirs)
    task_list = [tasks.load_task(name, args.seed) for name in args.tasks.split(',')]
    rows = []
    for workdir in workdirs:
      tokenizer, model, params = load_run(workdir)
      for task in task_list:
        for k in shots:
          result = few_shot.evaluate_task(
            tokenizer, model, params, task, k, args.seed, limit=args.limit
          )
          rows.append({**model_row(workdir, model), **result})
          print(
            f'{rows[-1]["model"]} {task.name} k={k}: accuracy {result["accuracy"]:.3f} ± '
            f'{result["stderr"]:.3f} (prompts cut: {result["truncated"]:.0%})',
            flush=True,
          )
    summary = rename_summary(rows)
    for row in summary:
      print(
        f'{row["model"]} stdlib_rename_* k={row["shots"]}: accuracy {row["accuracy"]:.3f} ± '
        f'{row["stderr"]:.3f}, gain over k=0 {row["gain"]:+.3f} ± {row["gain_stderr"]:.3f}'
      )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump(
        {'rows': rows, 'rename_summary': summary, 'seed': args.seed, 'limit': args.limit},
        f,
        indent=1,
      )
    panels = len(task_list) + bool(summary)
    fig = Figure(figsize=(5 * panels, 4), layout='constrained')
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if summary:
      for workdir in workdirs:
        model_rows = [r for r in summary if r['workdir'] == workdir]
        label = f'{model_rows[0]["model"]} (N={model_rows[0]["N"]:,})'
        plot_accuracy(axes[-1], model_rows, 'shots', label)
      axes[-1].axhline(0.25, color='grey', linestyle='--', label='chance (= the k=0 mean)')
      axes[-1].set(
        xscale='symlog',
        xlabel='demonstrations k',
        ylabel='length-normalised accuracy',
        title=f'stdlib_rename_*, the {RENAME_FAMILY} tasks pooled',
      )
      axes[-1].set_xticks(shots, [str(k) for k in shots])
      axes[-1].legend(fontsize='small')
    for ax, task in zip(axes, task_list):
      metric, stderr = (
        ('accuracy_norm', 'stderr_norm')
        if task.kind == 'multiple_choice'
        else ('accuracy', 'stderr')
      )
      for workdir in workdirs:
        model_rows = [r for r in rows if r['task'] == task.name and r['workdir'] == workdir]
        plot_accuracy(
          ax,
          model_rows,
          'shots',
          f'{model_rows[0]["model"]} (N={model_rows[0]["N"]:,})',
          metric,
          stderr,
        )
      if task.kind == 'multiple_choice':
        chance = next(r['chance'] for r in rows if r['task'] == task.name)
        ax.axhline(chance, color='grey', linestyle='--', label='chance')
      ax.set(
        xscale='symlog',
        xlabel='demonstrations k',
        title=task.name,
        ylabel='length-normalised accuracy' if task.kind == 'multiple_choice' else 'accuracy',
      )
      ax.set_xticks(shots, [str(k) for k in shots])
      ax.legend(fontsize='small')
    fig.savefig(os.path.join(args.out, f'{NAME}.png'), dpi=120)
    print(f'wrote {args.out}/results.json and {NAME}.png')


RENAME_FAMILY = len([name for name in tasks.STDLIB_TASKS if name.startswith('stdlib_rename_')])


def rename_summary(rows: list[dict]) -> list[dict]:
  """Per model and k, the accuracy pooled over the stdlib_rename_* tasks, when all of them were
  evaluated: their zero-shot mean is chance by construction, so the gain over k = 0 is what the
  demonstrations taught. 'accuracy' is the length-normalised score's (the summed log-likelihood
  favours the shortest renaming, the initials, whatever the demonstrations say; it is kept as
  accuracy_summed). Standard errors are binomial over the pooled questions; the gain's adds the
  two in quadrature (the same questions at both k, so it is conservative)."""
  summary = []
  for workdir in dict.fromkeys(r['workdir'] for r in rows):
    family = [r for r in rows if r['workdir'] == workdir and r['task'].startswith('stdlib_rename_')]
    if len({r['task'] for r in family}) < RENAME_FAMILY:
      continue
    pooled = {}
    for k in sorted({r['shots'] for r in family}):
      at_k = [r for r in family if r['shots'] == k]
      n = sum(r['n'] for r in at_k)
      pooled[k] = n, *(sum(r[m] * r['n'] for r in at_k) / n for m in ('accuracy_norm', 'accuracy'))
    se = lambda p, n: math.sqrt(p * (1 - p) / n)
    n0, p0, _ = pooled.get(0, (1, math.nan, math.nan))
    for k, (n, p, p_summed) in pooled.items():
      summary.append(
        {
          **{key: family[0][key] for key in ('model', 'workdir', 'N', 'N_total', 'eval_loss')},
          'shots': k,
          'n': n,
          'accuracy': p,
          'stderr': se(p, n),
          'gain': p - p0,
          'gain_stderr': math.hypot(se(p, n), se(p0, n0)),
          'accuracy_summed': p_summed,
        }
      )
  return summary


if __name__ == '__main__':
  main()
