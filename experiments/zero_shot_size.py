"""GPT-2's claim in miniature: zero-shot accuracy rises with model size.

  python -m experiments.zero_shot_size runs/kaplan_model_size/d12_lrx0.5 ... \\
      --tasks stdlib_next_line,stdlib_cloze,stdlib_brackets
  python -m experiments.zero_shot_size --plot_only   # again from results.json, evaluating nothing

Evaluates every pre-training workdir given (paths or quoted globs; 6 or more sizes for the claim)
zero-shot on built-in multiple-choice and cloze tasks (gptjax.downstream.tasks). Every model
answers the same examples: those of the task's test split whose every answer fits every model's
context (few_shot.encode_pair refuses an answer longer than n_ctx tokens; the rest are dropped and
counted), the first --limit of them if given.

The claim holds on a task when accuracy rises with N: Spearman's rank correlation of accuracy with
N over the models is at least MIN_SPEARMAN, and the largest model is significantly (p < ALPHA)
more accurate than the smallest. That test is paired, since both answer the same examples:
McNemar's exact test, a one-sided binomial test on the examples exactly one of the two gets right
(under the null hypothesis of equal accuracy each is the largest's with probability 1/2). The
verdict needs MIN_SIZES distinct sizes or more. Spearman's rho comes with a p-value too, from a
one-sided permutation test (exact for 7 models or fewer); the verdict asks for the rho itself.

Writes OUT/results.json: `rows`, one per model and task (N, the validation loss, accuracy and its
standard error, and which examples it got right), and `summary`, one per task (the models in order
of N, Spearman's rho and its p-value, McNemar's counts and p-values, the verdict), for the summed
score `accuracy` (what the verdict is on) and, for multiple choice, the length-normalised
`accuracy_norm` too; and OUT/zero_shot_size.png: per task, accuracy against N (log scale) above
and against the validation loss below (coloured by training budget where the workdir's name gives
it: the isoFLOP sweep's C<FLOPs>_L<layers>_d<width>), standard errors as bars, chance dashed.
"""

import argparse
import dataclasses
import glob
import itertools
import json
import math
import os
import re

import numpy as np
from absl import logging
from matplotlib.figure import Figure
from matplotlib.lines import Line2D  # the Agg renderer; no display needed
from scipy import stats

from gptjax.cli import reported
from gptjax.downstream import few_shot, tasks
from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.training import metrics
from gptjax.training.state import load_run, read_run

NAME = 'zero_shot_size'
MIN_SPEARMAN = 0.9
ALPHA = 0.05
MIN_SIZES = 6
PERMUTATIONS = 9_999  # random orders for the Spearman test when there are too many to try all
# The scores of a task kind: (accuracy, its standard error, per-example correctness, label).
SCORES = {
  'multiple_choice': [
    ('accuracy', 'stderr', 'correct', 'summed log-likelihood'),
    ('accuracy_norm', 'stderr_norm', 'correct_norm', 'per-token (length-normalised)'),
  ],
  'cloze': [('accuracy', 'stderr', 'correct', 'greedy match')],
}


def expand(patterns: list[str]) -> list[str]:
  """The workdirs the paths and globs name, in order of appearance: a path must be a workdir (hold
  a config.json); a glob names the workdirs among its matches (so 'ROOT/*' leaves out a sweep
  root's _shared and _xla_cache) and must match one at least."""
  is_workdir = lambda path: os.path.isfile(os.path.join(path, 'config.json'))
  workdirs = []
  for pattern in patterns:
    if glob.has_magic(pattern):
      matches = [m for m in sorted(glob.glob(os.path.expanduser(pattern))) if is_workdir(m)]
      if not matches:
        raise UserError(f'{pattern} matches no pre-training workdir (a folder with a config.json)')
    elif is_workdir(os.path.expanduser(pattern)):
      matches = [pattern]
    else:
      raise UserError(f'{pattern} is not a pre-training workdir (no config.json)')
    workdirs += [m for m in matches if m not in workdirs]
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


def saved_rows(results_path: str) -> list[dict]:
  """The rows of an earlier run's results.json, for --plot_only."""
  if not os.path.isfile(results_path):
    raise UserError(f'no {results_path} to plot; evaluate some workdirs first')
  with open(results_path) as f:
    return json.load(f)['rows']


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


# --- Which examples, and which each model gets right -------------------------------------------


def eval_split(task: tasks.Task) -> str:
  """The split few_shot.evaluate_task evaluates by default: test, else validation."""
  return 'test' if 'test' in task.splits else 'validation'


def continuations(kind: str, example: dict) -> list[str]:
  return example['choices'] if kind == 'multiple_choice' else [example['target']]


def scorable(task: tasks.Task, runs: list[tuple]) -> tuple[tasks.Task, int]:
  """(the task with its evaluation split cut to the examples every (tokenizer, n_ctx) of `runs`
  can score zero-shot, how many were dropped): an answer longer than n_ctx tokens cannot be."""

  def fits(example: dict) -> bool:
    for tokenizer, n_ctx in runs:
      for continuation in continuations(task.kind, example):
        try:
          few_shot.encode_pair(tokenizer, example['context'], continuation, n_ctx)
        except ValueError:
          return False
    return True

  split = eval_split(task)
  kept = [e for e in task.split(split) if fits(e)]
  dropped = len(task.split(split)) - len(kept)
  return dataclasses.replace(task, splits={**task.splits, split: kept}), dropped


def correctness(tokenizer, model, params, task: tasks.Task, limit: int = 0) -> dict:
  """Which of the first `limit` (0 = all) examples of the evaluation split the model gets right
  zero-shot, scored exactly as few_shot.evaluate_task scores them ('correct': the summed score
  or the greedy match; 'correct_norm': the per-token score of a multiple-choice task), each a
  string of 0s and 1s, one per example: what the paired test needs and evaluate_task does not
  return."""
  examples = task.split(eval_split(task))[: limit or None]
  sequences, owner = [], []
  for i, example in enumerate(examples):
    text = few_shot.prompt(task.kind, example, [])
    for continuation in continuations(task.kind, example):
      ids, n, _ = few_shot.encode_pair(tokenizer, text, continuation, model.config.n_ctx)
      sequences.append((ids, n))
      owner.append(i)
  logprob_S, greedy_S = few_shot.score(model, params, sequences)
  if task.kind == 'cloze':
    return {'correct': _bits(greedy_S)}
  tokens_S, owner_S = np.array([n for _, n in sequences]), np.array(owner)
  labels = np.array([e['label'] for e in examples])
  pick = lambda values: np.array([np.argmax(values[owner_S == i]) for i in range(len(examples))])
  return {
    'correct': _bits(pick(logprob_S) == labels),
    'correct_norm': _bits(pick(logprob_S / tokens_S) == labels),
  }


def _bits(correct: np.ndarray) -> str:
  return ''.join('1' if c else '0' for c in correct)


def _correct(bits: str) -> np.ndarray:
  return np.array([c == '1' for c in bits], bool)


# --- Statistics --------------------------------------------------------------------------------


def mcnemar(correct_large: str, correct_small: str) -> dict:
  """McNemar's exact test of the larger model against the smaller on the same examples: the
  examples only one of them gets right, and the binomial p-values of as many of them being the
  larger's under even odds (one-sided: the larger is more accurate; and two-sided). The models'
  correctness is as correctness gives it, one character per example."""
  large, small = _correct(correct_large), _correct(correct_small)
  if large.shape != small.shape:
    raise ValueError('the two models answered different examples')
  only_large, only_small = int(np.sum(large & ~small)), int(np.sum(small & ~large))
  discordant = only_large + only_small
  if not discordant:
    return {'only_largest': 0, 'only_smallest': 0, 'p_greater': 1.0, 'p_two_sided': 1.0}
  return {
    'only_largest': only_large,
    'only_smallest': only_small,
    'p_greater': float(stats.binomtest(only_large, discordant, 0.5, 'greater').pvalue),
    'p_two_sided': float(stats.binomtest(only_large, discordant, 0.5).pvalue),
  }


def spearman(x: list[float], y: list[float]) -> tuple[float, float]:
  """Spearman's rho of y with x (Pearson's correlation of their ranks, ties given their mean
  rank) and its one-sided p-value, the chance that rho is this high or higher if y is unrelated
  to x: a permutation test, exact (every order of y) up to 7 points (5,040 orders), else from
  PERMUTATIONS random orders."""
  rank_x, rank_y = stats.rankdata(x), stats.rankdata(y)
  n = len(rank_x)
  if math.factorial(n) <= PERMUTATIONS:
    orders, exact = np.array(list(itertools.permutations(range(n)))), True
  else:
    rng = np.random.default_rng(0)
    orders, exact = np.array([rng.permutation(n) for _ in range(PERMUTATIONS)]), False
  centred_x, centred_y = rank_x - rank_x.mean(), rank_y - rank_y.mean()
  norm = math.sqrt(np.sum(centred_x**2) * np.sum(centred_y**2))
  rho = float(np.dot(centred_x, centred_y) / norm)
  null = centred_y[orders] @ centred_x / norm
  at_least = int(np.sum(null >= rho - 1e-12))
  return rho, at_least / len(orders) if exact else (at_least + 1) / (len(orders) + 1)


def score_summary(rows: list[dict], metric: str, stderr: str, correct: str) -> dict:
  """For one task and score: the models in order of N with their accuracies, Spearman's rho of
  accuracy with N (spearman), the paired test of the largest model against the smallest
  (mcnemar) and the verdict. Of several models of the same size, the first by name is the
  smallest or the largest."""
  rows = sorted(rows, key=lambda r: (r['N'], r['model']))
  n_values, accuracy = [r['N'] for r in rows], [r[metric] for r in rows]
  sizes = len(set(n_values))
  if sizes >= 2 and len(set(accuracy)) >= 2:
    rho, rho_p = spearman(n_values, accuracy)
  else:
    rho, rho_p = math.nan, math.nan  # undefined when either is constant
  smallest, largest = rows[0], next(r for r in rows if r['N'] == n_values[-1])
  test = (
    mcnemar(largest[correct], smallest[correct])
    if correct in smallest and correct in largest and sizes >= 2
    else None
  )
  reasons = []
  if sizes < MIN_SIZES:
    reasons.append(f'{sizes} sizes < {MIN_SIZES}')
  if not rho >= MIN_SPEARMAN:  # nan too
    reasons.append(f'Spearman {rho:.3f} < {MIN_SPEARMAN}')
  if test is None:
    reasons.append('no per-example results for the paired test')
  elif not test['p_greater'] < ALPHA:
    reasons.append(f'largest vs smallest p = {test["p_greater"]:.3g} >= {ALPHA}')
  return {
    'models': [r['model'] for r in rows],
    'N': n_values,
    'accuracy': accuracy,
    'stderr': [r[stderr] for r in rows],
    'sizes': sizes,
    'spearman': rho,
    'spearman_p': rho_p,
    'smallest': smallest['model'],
    'largest': largest['model'],
    'mcnemar': test,
    'holds': not reasons,
    'verdict': 'does not hold: ' + '; '.join(reasons) if reasons else 'holds',
  }


def summarize(rows: list[dict]) -> list[dict]:
  """One summary per task: the summed score's (the verdict) and, for multiple choice, the
  per-token score's statistics."""
  summaries = []
  for name in dict.fromkeys(r['task'] for r in rows):
    task_rows = [r for r in rows if r['task'] == name]
    first = task_rows[0]
    if len({r['n'] for r in task_rows}) != 1:
      raise UserError(f'the models answered different numbers of {name} examples')
    summary = {
      'task': name,
      'kind': first['kind'],
      'split': first['split'],
      'n': first['n'],
      'dropped': first.get('dropped', 0),
      'chance': first.get('chance'),
    }
    for metric, stderr, correct, _ in SCORES[first['kind']]:
      summary[metric] = score_summary(task_rows, metric, stderr, correct)
    summaries.append(summary)
  return summaries


def report(summaries: list[dict]) -> str:
  """The summaries as text: per task, each model's accuracy, then the statistics."""
  lines = []
  for s in summaries:
    chance = f', chance {s["chance"]:.3f}' if s['chance'] is not None else ''
    lines.append(
      f'{s["task"]} ({s["kind"]}, {s["split"]}, n={s["n"]}, {s["dropped"]} dropped{chance})'
    )
    scores = [m for m, *_ in SCORES[s['kind']]]
    for i, (model, n) in enumerate(zip(s['accuracy']['models'], s['accuracy']['N'])):
      cells = '  '.join(f'{m} {s[m]["accuracy"][i]:.3f} ± {s[m]["stderr"][i]:.3f}' for m in scores)
      lines.append(f'  {model:>14} N={n:>8,}  {cells}')
    for m in scores:
      t = s[m]['mcnemar']
      test = (
        f'{s[m]["largest"]} vs {s[m]["smallest"]}: {t["only_largest"]} vs {t["only_smallest"]} '
        f'examples only one got right, McNemar p = {t["p_greater"]:.3g} (one-sided), '
        f'{t["p_two_sided"]:.3g} (two-sided)'
        if t
        else 'no paired test'
      )
      lines.append(
        f'  {m}: Spearman {s[m]["spearman"]:.3f} (p = {s[m]["spearman_p"]:.3g}); {test}; '
        f'{s[m]["verdict"]}'
      )
  return '\n'.join(lines)


# --- The plot ----------------------------------------------------------------------------------


def plot(rows: list[dict], summaries: list[dict], path: str) -> None:
  """Per task (a column), accuracy against N above, with the summed score's Spearman rho and
  McNemar p in the title, and against the validation loss below (models with no logged loss left
  out): summed and per-token (length-normalised) scores of a multiple-choice task, greedy match of
  a cloze task."""
  budgets = sorted({budget(r) for r in rows}, key=lambda b: float(b) if b else 0.0)
  colours = dict(zip(budgets, [f'C{i}' for i in range(len(budgets))]))
  fig = Figure(figsize=(6 * len(summaries), 9.5), layout='constrained')
  axes = fig.subplots(2, len(summaries), squeeze=False)
  for (top, bottom), summary in zip(axes.T, summaries):
    name, scores = summary['task'], SCORES[summary['kind']]
    task_rows = [r for r in rows if r['task'] == name]
    # Above: one line per score through the models in order of N (points alone when sizes repeat).
    joined = len({r['N'] for r in task_rows}) == len(task_rows)
    for (metric, stderr, _, label), marker in zip(scores, 'os'):
      points = sorted(task_rows, key=lambda r: r['N'])
      top.errorbar(
        [r['N'] for r in points],
        [r[metric] for r in points],
        yerr=[r[stderr] for r in points],
        fmt=marker + ('-' if joined else ''),
        color='black',
        mfc='black' if marker == 'o' else 'none',
        capsize=3,
        label=label,
      )
    first = summary['accuracy']
    test = first['mcnemar']
    top.set(
      xscale='log',
      xlabel='non-embedding parameters N',
      ylabel='zero-shot accuracy',
      title=(
        f'{name} ({summary["split"]}, n={summary["n"]})\nSpearman {first["spearman"]:.2f}, '
        + (f'largest vs smallest p = {test["p_greater"]:.2g}' if test else 'no paired test')
        + (': holds' if first['holds'] else ': does not hold')
      ),
    )
    # Below: accuracy against validation loss, coloured by budget.
    loss_rows = [r for r in task_rows if r['eval_loss'] is not None]
    for metric, stderr, _, _ in scores:
      marker = 'o' if metric == 'accuracy' else 's'
      for b in budgets:
        points = [r for r in loss_rows if budget(r) == b]
        if points:
          bottom.errorbar(
            [r['eval_loss'] for r in points],
            [r[metric] for r in points],
            yerr=[r[stderr] for r in points],
            fmt=marker,
            color=colours[b],
            capsize=2,
            mfc=colours[b] if marker == 'o' else 'none',
            alpha=0.85,
          )
    bottom.set(xlabel='validation loss (nats/token)', ylabel='zero-shot accuracy')
    for ax in (top, bottom):
      if summary['chance'] is not None:
        ax.axhline(summary['chance'], color='grey', linestyle='--', label='chance')
    top.legend(fontsize='small')
    if budgets != [None]:  # the colours name budgets; the markers are those above
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
      bottom.legend(handles=handles, fontsize='small')
  fig.savefig(path, dpi=120)


# --- Running it --------------------------------------------------------------------------------


def evaluate_all(args: argparse.Namespace) -> list[dict]:
  """One results row per workdir and task, on the examples every model can score."""
  workdirs = expand(args.workdirs)
  if len(workdirs) < MIN_SIZES:
    print(f'warning: {len(workdirs)} models; the claim needs {MIN_SIZES} or more sizes')
  runs = []
  for workdir in workdirs:
    config, tokenizer = read_run(workdir, 'gpt')
    runs.append((tokenizer, config.model.n_ctx))
  task_list = []
  for name in args.tasks.split(','):
    task, dropped = scorable(tasks.load_task(name, args.seed), runs)
    if dropped:
      print(f"{name}: {dropped} examples dropped, an answer longer than a model's context")
    task_list.append((task, dropped))
  rows = []
  for workdir in workdirs:
    tokenizer, model, params = load_run(workdir)
    for task, dropped in task_list:
      result = few_shot.evaluate_task(
        tokenizer, model, params, task, 0, args.seed, limit=args.limit
      )
      correct = correctness(tokenizer, model, params, task, args.limit)
      for metric, _, key, _ in SCORES[task.kind]:
        if not math.isclose(np.mean(_correct(correct[key])), result[metric]):
          raise RuntimeError(f'{task.name}: per-example {key} disagrees with evaluate_task')
      rows.append({**model_row(workdir, model), **result, 'dropped': dropped, **correct})
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
      rows = saved_rows(results_path)
      summaries = summarize(rows)
    else:
      rows = evaluate_all(args)
      summaries = summarize(rows)
      os.makedirs(args.out, exist_ok=True)
      with open(results_path, 'w') as f:
        json.dump(
          {'summary': summaries, 'rows': rows, 'seed': args.seed, 'limit': args.limit}, f, indent=1
        )
    print(report(summaries))
    plot(rows, summaries, os.path.join(args.out, f'{NAME}.png'))
    print(f'wrote {args.out}/{"" if args.plot_only else "results.json and "}{NAME}.png')


if __name__ == '__main__':
  main()
