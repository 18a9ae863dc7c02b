"""GPT-2's claim in miniature: zero-shot accuracy rises with model size.

  python -m experiments.zero_shot_size '/work/sweep_runs/chinchilla_isoflop/C8.0e11_*'

Evaluates every pre-training workdir given (paths or quoted globs; 4 or more sizes for the claim)
zero-shot on the built-in multiple-choice and cloze tasks (gptjax.tasks) and writes
experiments/results/zero_shot_size/results.json (one row per model and task: N, the validation
loss, accuracy and its standard error) and zero_shot_size.png (accuracy against N, chance dashed).
"""
import argparse
import glob
import json
import os

from absl import logging
from matplotlib import ticker
from matplotlib.figure import Figure  # the Agg renderer; no display needed

from gptjax import accounting, evaluate, metrics, runs, tasks
from gptjax.errors import UserError, reported

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
  return {'model': os.path.basename(os.path.normpath(workdir)), 'workdir': workdir,
          'N': count.non_embedding, 'N_total': count.total,
          'eval_loss': logged[-1] if logged else None}


def plot_accuracy(ax, rows: list[dict], x_key: str, label: str | None = None, metric: str = 'accuracy',
                  stderr: str = 'stderr', **style) -> None:
  rows = sorted(rows, key=lambda r: r[x_key])
  ax.errorbar([r[x_key] for r in rows], [r[metric] for r in rows], yerr=[r[stderr] for r in rows],
              marker='o', capsize=3, label=label, **style)


def evaluation_parser(name: str, doc: str) -> argparse.ArgumentParser:
  """The arguments the zero- and few-shot experiments share."""
  parser = argparse.ArgumentParser(prog=f'python -m experiments.{name}', description=doc.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='+', help='pre-training workdirs (paths or quoted globs)')
  parser.add_argument('--tasks', default='stdlib_next_line,stdlib_cloze', help='comma-separated')
  parser.add_argument('--limit', type=int, default=0, help='examples per task; 0 = all')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join('experiments', 'results', name))
  return parser


def main(argv: list[str] | None = None) -> None:
  args = evaluation_parser(NAME, __doc__).parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    workdirs = expand(args.workdirs)
    if len(workdirs) < 4:
      print(f'warning: {len(workdirs)} models; the claim needs 4 or more sizes')
    task_list = [tasks.load_task(name, args.seed) for name in args.tasks.split(',')]
    rows = []
    for workdir in workdirs:
      tokenizer, model, params = runs.load_run(workdir)
      for task in task_list:
        result = evaluate.evaluate_task(tokenizer, model, params, task, 0, args.seed, limit=args.limit)
        rows.append({**model_row(workdir, model), **result})
        print(f'{rows[-1]["model"]} (N={rows[-1]["N"]:,}) {task.name}: accuracy '
              f'{result["accuracy"]:.3f} ± {result["stderr"]:.3f}', flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump({'rows': rows, 'seed': args.seed, 'limit': args.limit}, f, indent=1)
    fig = Figure(figsize=(5 * len(task_list), 4), layout='constrained')
    for ax, task in zip(fig.subplots(1, len(task_list), squeeze=False)[0], task_list):
      task_rows = [r for r in rows if r['task'] == task.name]
      plot_accuracy(ax, task_rows, 'N', 'summed log-likelihood' if task.kind == 'multiple_choice' else 'greedy match')
      if task.kind == 'multiple_choice':
        plot_accuracy(ax, task_rows, 'N', 'length-normalised', 'accuracy_norm', 'stderr_norm')
        ax.axhline(task_rows[0]['chance'], color='grey', linestyle='--', label='chance')
      ax.set(xscale='log', xlabel='non-embedding parameters N', ylabel='zero-shot accuracy',
             title=f'{task.name} ({task_rows[0]["split"]}, n={task_rows[0]["n"]})')
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
      ax.legend()
    fig.savefig(os.path.join(args.out, f'{NAME}.png'), dpi=120)
    print(f'wrote {args.out}/results.json and {NAME}.png')


if __name__ == '__main__':
  main()
