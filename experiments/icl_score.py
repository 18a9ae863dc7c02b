"""Olsson et al. (2022) in miniature: the in-context-learning score over training.

  python -m experiments.icl_score runs/long_context --late 500 --early 50
  python -m experiments.icl_score '/work/sweep_runs/chinchilla_isoflop/C8.0e11_*' --late 100 \\
      --early 10 --latest_only
  python -m experiments.icl_score --plot_only   # again from results.json, evaluating nothing

For each pre-training workdir given (paths or quoted globs), the ICL score (the mean loss at
context position --late minus that at --early, each the mean over positions ± --band; see
gptjax/downstream/icl.py) of every checkpoint it holds, on the validation windows of its token
cache. Writes experiments/results/icl_score/results.json (one row per model and checkpoint: step,
training tokens, score and standard error, both bands' losses, the per-position loss curve) and
icl_score.png: the final checkpoint's loss against context position (the bands shaded), and the
score against training tokens, where the induction-head phase change shows as a sudden fall.
Olsson et al.'s positions 500 and 50 need a context n_ctx >= 506 with the default band of 5;
shorter runs need --late (and --early) that fit. A run keeps 3 checkpoints unless trained with a
larger train.keep_checkpoints (and a small train.checkpoint_every, to see the change).
"""

import argparse
import json
import os

from absl import logging
from matplotlib.figure import Figure

from experiments.zero_shot_size import expand, saved_rows
from gptjax.cli import reported
from gptjax.downstream import icl

NAME = 'icl_score'


def plot(rows: list[dict], path: str) -> None:
  fig = Figure(figsize=(11, 4), layout='constrained')
  curves, scores = fig.subplots(1, 2)
  workdirs = list(dict.fromkeys(r['workdir'] for r in rows))
  for i, workdir in enumerate(workdirs):
    model_rows = sorted((r for r in rows if r['workdir'] == workdir), key=lambda r: r['step'])
    last, colour = model_rows[-1], f'C{i % 10}'
    curves.plot(
      range(len(last['loss_curve'])),
      last['loss_curve'],
      color=colour,
      label=f'{last["model"]} (step {last["step"]})',
    )
    scores.errorbar(
      [r['tokens'] for r in model_rows],
      [r['icl_score'] for r in model_rows],
      yerr=[r['icl_stderr'] for r in model_rows],
      marker='o',
      capsize=3,
      color=colour,
      label=last['model'],
    )
  first = rows[0]
  for position in (first['early'], first['late']):
    curves.axvspan(position - first['band'] - 0.5, position + first['band'] + 0.5, alpha=0.15)
  curves.set(
    xlabel='context position t (predicting token t + 1)',
    ylabel='mean validation loss (nats/token)',
    title=f'loss by position (bands: {first["early"]} and {first["late"]} ± {first["band"]})',
  )
  scores.axhline(0, color='grey', linestyle='--')
  scores.set(
    xscale='log',
    xlabel='training tokens',
    ylabel=f'ICL score: loss@{first["late"]} - loss@{first["early"]} (nats)',
    title='in-context-learning score over training',
  )
  for ax in (curves, scores):
    ax.legend(fontsize='small')
  fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('workdirs', nargs='*', help='pre-training workdirs (paths or quoted globs)')
  parser.add_argument('--late', type=int, default=icl.LATE, help='the late context position')
  parser.add_argument('--early', type=int, default=icl.EARLY, help='the early context position')
  parser.add_argument('--band', type=int, default=icl.BAND, help='positions ± band are averaged')
  parser.add_argument(
    '--latest_only', action='store_true', help='only the newest checkpoint of each workdir'
  )
  parser.add_argument('--seq_len', type=int, default=0, help='window length; 0 = train.seq_len')
  parser.add_argument('--limit', type=int, default=0, help='validation windows; 0 = all')
  parser.add_argument(
    '--within_documents',
    action='store_true',
    help='only windows with no document start after their first token',
  )
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
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
      rows = saved_rows(results_path)
    else:
      rows = []
      for workdir in expand(args.workdirs):
        for result in icl.evaluate_workdir(
          workdir,
          args.late,
          args.early,
          args.band,
          every_checkpoint=not args.latest_only,
          seq_len=args.seq_len,
          limit=args.limit,
          within_documents=args.within_documents,
          batch_size=args.batch_size,
        ):
          rows.append(
            {'model': os.path.basename(os.path.normpath(workdir)), 'workdir': workdir, **result}
          )
          print(
            f'{rows[-1]["model"]} step {result["step"]} ({result["tokens"]:,} tokens): ICL score '
            f'{result["icl_score"]:+.4f} ± {result["icl_stderr"]:.4f} (loss '
            f'{result["late_loss"]:.4f} at {args.late}, {result["early_loss"]:.4f} at '
            f'{args.early}; {result["windows"]} windows)',
            flush=True,
          )
      os.makedirs(args.out, exist_ok=True)
      with open(results_path, 'w') as f:
        json.dump({'rows': rows, 'settings': vars(args)}, f, indent=1)
    plot(rows, os.path.join(args.out, f'{NAME}.png'))
    print(f'wrote {args.out}/{"" if args.plot_only else "results.json and "}{NAME}.png')


if __name__ == '__main__':
  main()
