"""GPT-2's claim in miniature: zero-shot accuracy rises with model size.

  python -m experiments.zero_shot_size '/work/sweep_runs/chinchilla_isoflop/C8.0e11_*'
  python -m experiments.zero_shot_size --plot_only   # again from results.json, evaluating nothing

Evaluates every pre-training workdir given (paths or quoted globs; 4 or more sizes for the claim)
zero-shot on the built-in multiple-choice and cloze tasks (gptjax.tasks) and writes
experiments/results/zero_shot_size/results.json (one row per model and task: N, the validation
loss, accuracy and its standard error) and zero_shot_size.png: accuracy against the model's
validation loss, one point per model, coloured by training budget where the workdir's name gives
it (the isoFLOP sweep's C<FLOPs>_L<layers>_d<width>), chance dashed. Points are not joined: models
of one size differ in budget, and what accuracy follows here is the loss the model reached.
"""

import argparse
import glob
import json
import os
import re

from absl import logging
from matplotlib.figure import Figure
from matplotlib.lines import Line2D  # the Agg renderer; no display needed

from gptjax.cli import reported
from gptjax.downstream import few_shot, tasks
from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.training import metrics
from gptjax.training.state import load_run

NAME = 'zero_shot_size'


def expand(patterns: list[str]) -> list[str]:
  """The workdirs the paths and globs name, each with a config.json, in order of appearance."""
  workdirs = []
  for pattern in patterns:
    matches = sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]
    workdirs += [m for m in matches if m not in workdirs]
  missing = [w for w in workdirs if not os.path.isfile(os.path.join(w, 'config.json'))]
  if missing:
    raise UserError(f'{missing[0]} is not a pre-training workdir (no config.json)')
  return workdirs


def model_row(workdir: str, model) -> dict:
  """What a results row says about the model: its name, N and final validation loss."""
  logged = [r['eval_loss'] for r in metrics.read_metrics(workdir) if 'eval_loss' in r]
  count = accounting.count_params(model.config)
  return {
    'model': os.path.basename(os.path.normpath(workdir)),
    'workdir': workdir,
    'N': count.non_embedding,
    'N_total': count.total,
    'eval_loss': logged[-1] if logged else None,
  }


def plot_accuracy(
  ax,
  rows: list[dict],
  x_key: str,
  label: str | None = None,
  metric: str = 'accuracy',
  stderr: str = 'stderr',
  **style,
) -> None:
  rows = sorted(rows, key=lambda r: r[x_key])
  ax.errorbar(
    [r[x_key] for r in rows],
    [r[metric] for r in rows],
    yerr=[r[stderr] for r in rows],
    marker='o',
    capsize=3,
    label=label,
    **style,
  )


def evaluation_parser(
  name: str, doc: str, workdirs_required: bool = True
) -> argparse.ArgumentParser:
  """The arguments the zero- and few-shot experiments share."""
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{name}', description=doc.split('\n\n')[0]
  )
  parser.add_argument(
    'workdirs',
    nargs='+' if workdirs_required else '*',
    help='pre-training workdirs (paths or quoted globs)',
  )
  parser.add_argument('--tasks', default='stdlib_next_line,stdlib_cloze', help='comma-separated')
  parser.add_argument('--limit', type=int, default=0, help='examples per task; 0 = all')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join('experiments', 'results', name))
  return parser


def budget(row: dict) -> str | None:
  """The training budget in the model's name (C1.0e11_L1_d32 -> '1.0e11'), if it has one."""
  match = re.match(r'C(\d(?:\.\d+)?e\d+)_', row['model'])
  return match.group(1) if match else None


def plot(rows: list[dict], path: str) -> None:
  """Per task, accuracy against validation loss: summed and per-token (length-normalised) scores
  of a multiple-choice task, greedy match of a cloze task. Models with no logged loss are left
  out."""
  task_names = list(dict.fromkeys(r['task'] for r in rows))
  budgets = sorted({budget(r) for r in rows}, key=lambda b: float(b) if b else 0.0)
  colours = dict(zip(budgets, [f'C{i}' for i in range(len(budgets))]))
  fig = Figure(figsize=(6 * len(task_names), 5), layout='constrained')
  for ax, name in zip(fig.subplots(1, len(task_names), squeeze=False)[0], task_names):
    first = next(r for r in rows if r['task'] == name)
    task_rows = [r for r in rows if r['task'] == name and r['eval_loss'] is not None]
    metrics = (
      [
        ('accuracy', 'stderr', 'o', 'summed log-likelihood'),
        ('accuracy_norm', 'stderr_norm', 's', 'per-token (length-normalised)'),
      ]
      if first['kind'] == 'multiple_choice'
      else [('accuracy', 'stderr', 'o', 'greedy match')]
    )
    for metric, stderr, marker, label in metrics:
      for b in budgets:
        points = [r for r in task_rows if budget(r) == b]
        if points:
          ax.errorbar(
            [r['eval_loss'] for r in points],
            [r[metric] for r in points],
            yerr=[r[stderr] for r in points],
            fmt=marker,
            color=colours[b],
            capsize=2,
            mfc=colours[b] if marker == 'o' else 'none',
            alpha=0.85,
          )
    if 'chance' in first:
      ax.axhline(first['chance'], color='grey', linestyle='--')
    # Two legends' worth in one: the colours name budgets, the markers the scores.
    handles = [
      Line2D(
        [],
        [],
        color=colours[b],
        marker='o',
        linestyle='none',
        label=f'C = {b} FLOPs' if b else 'no budget in name',
      )
      for b in budgets
    ]
    handles += [
      Line2D(
        [],
        [],
        color='black',
        marker=marker,
        linestyle='none',
        mfc='black' if marker == 'o' else 'none',
        label=label,
      )
      for _, _, marker, label in metrics
    ]
    if 'chance' in first:
      handles.append(Line2D([], [], color='grey', linestyle='--', label='chance'))
    ax.legend(
      handles=handles, fontsize='small', ncols=3, loc='upper center', bbox_to_anchor=(0.5, -0.14)
    )
    ax.set(
      xlabel='validation loss (nats/token)',
      ylabel='zero-shot accuracy',
      title=f'{name} ({first["split"]}, n={first["n"]})',
    )
  fig.savefig(path, dpi=120)


def evaluate_all(args: argparse.Namespace) -> list[dict]:
  """One results row per workdir and task."""
  workdirs = expand(args.workdirs)
  if len(workdirs) < 4:
    print(f'warning: {len(workdirs)} models; the claim needs 4 or more sizes')
  task_list = [tasks.load_task(name, args.seed) for name in args.tasks.split(',')]
  rows = []
  for workdir in workdirs:
    tokenizer, model, params = load_run(workdir)
    for task in task_list:
      result = few_shot.evaluate_task(
        tokenizer, model, params, task, 0, args.seed, limit=args.limit
      )
      rows.append({**model_row(workdir, model), **result})
      print(
        f'{rows[-1]["model"]} (N={rows[-1]["N"]:,}) {task.name}: accuracy '
        f'{result["accuracy"]:.3f} ± {result["stderr"]:.3f}',
        flush=True,
      )
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = evaluation_parser(NAME, __doc__, workdirs_required=False)
  parser.add_argument(
    '--plot_only',
    action='store_true',
    help='redraw the plot from OUT/results.json; no workdir is read',
  )
  args = parser.parse_args(argv)
  if not args.workdirs and not args.plot_only:
    parser.error('name the workdirs to evaluate, or pass --plot_only')
  logging.set_verbosity(logging.WARNING)
  with reported():
    results_path = os.path.join(args.out, 'results.json')
    if args.plot_only:
      if not os.path.isfile(results_path):
        raise UserError(f'no {results_path} to plot; evaluate some workdirs first')
      with open(results_path) as f:
        rows = json.load(f)['rows']
    else:
      rows = evaluate_all(args)
      os.makedirs(args.out, exist_ok=True)
      with open(results_path, 'w') as f:
        json.dump({'rows': rows, 'seed': args.seed, 'limit': args.limit}, f, indent=1)
    plot(rows, os.path.join(args.out, f'{NAME}.png'))
    print(f'wrote {args.out}/{"" if args.plot_only else "results.json and "}{NAME}.png')


if __name__ == '__main__':
  main()
