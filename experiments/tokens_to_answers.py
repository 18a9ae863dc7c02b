"""Tokens to answers in miniature (Bhagia et al. 2024): a larger model's zero-shot accuracy
predicted in two steps, from the scaling law's loss prediction and an accuracy-from-loss map,
both fitted on smaller runs only, and the prediction committed before the larger runs' accuracy
is measured.

  python -m experiments.tokens_to_answers predict  # evaluates the fit runs, predicts (once)
  git add experiments/results/tokens_to_answers && git commit ...   # before `check`
  python -m experiments.tokens_to_answers check     # evaluates the held-out runs, writes check.json
  python -m experiments.tokens_to_answers check --report_only   # again from check.json

Step 1, N and D to loss, is the isoFLOP study's committed ladder prediction (--ladder, default
experiments/results/isoflop_study/ladder_prediction_C1.6e13.json): the isoFLOP-valley law fitted
to the tuned runs of the budgets up to 4e12 FLOPs, which predicted the validation loss of each
size at 1.6e13 before any of those runs was trained. Step 2, loss to accuracy, is fitted here on
the same tuned runs (the prediction's fit_runs, under --root), per task:

  accuracy(L) = chance + (1 - chance) * sigmoid(k * (L0 - L))

a logistic curve from chance (a model that has learnt nothing) to 1, falling with the loss L:
Bhagia et al.'s sigmoid with its floor and ceiling fixed, as 31 runs spanning 0.6 nats cannot
place them. It is fitted by maximum likelihood, each run's correct answers binomial. The
predicted accuracy of a held-out size is the map at its step-1 loss; its interval is the 2.5 and
97.5 percentiles over BOOTSTRAP refits of the map to runs resampled with replacement (the
step-1 loss is taken as exact: the ladder's error is reported on its own). Also written: the map
at the held-out run's trained loss (step 2 alone), which splits the two-step error into its
steps.

`check` evaluates each held-out size's best-learning-rate run (the ladder check's best_run, from
--ladder_check), all zero-shot on the same examples as the fit runs (zero_shot_size's rules), and
writes check.json: per run and task the predicted and measured accuracy, the error, the measured
accuracy's binomial standard error, and the verdict 'within' when |error| <= sqrt(half-width^2 +
(2 se)^2), the half-width being that of the bootstrap interval; and tokens_to_answers.png:
accuracy against loss per task, the map and its band, the fit runs, and the held-out runs
predicted (at their predicted loss) and measured (at their trained loss). --also names more
workdirs to put through the map at their trained loss, a post-hoc check of the map alone (e.g.
the Kaplan L(N) models, trained on other token budgets).
"""

import argparse
import datetime
import json
import math
import os
import subprocess

import numpy as np
from absl import logging
from matplotlib.figure import Figure
from scipy import optimize, special

from experiments import zero_shot_size
from gptjax.cli import reported
from gptjax.errors import UserError

NAME = 'tokens_to_answers'
RESULTS = os.path.join('experiments', 'results', NAME)
ISOFLOP_RESULTS = os.path.join('experiments', 'results', 'isoflop_study')
TASKS = 'stdlib_next_line,stdlib_brackets'
BOOTSTRAP = 1000


# --- The map from loss to accuracy -------------------------------------------------------------


def accuracy_at(loss, k: float, loss0: float, chance: float):
  return chance + (1 - chance) * special.expit(k * (loss0 - np.asarray(loss, float)))


def fit_map(loss_R, correct_R, n_R, chance: float) -> tuple[float, float]:
  """(k, L0) maximising the binomial likelihood of correct_R answers right out of n_R at loss_R."""
  loss_R, correct_R, n_R = (np.asarray(a, float) for a in (loss_R, correct_R, n_R))

  def negative_log_likelihood(theta):
    p_R = np.clip(accuracy_at(loss_R, *theta, chance), 1e-9, 1 - 1e-9)
    return -(correct_R * np.log(p_R) + (n_R - correct_R) * np.log1p(-p_R)).sum()

  start = (5.0, float(np.median(loss_R)))
  result = optimize.minimize(negative_log_likelihood, start, method='Nelder-Mead')
  return float(result.x[0]), float(result.x[1])


def bootstrap_maps(loss_R, correct_R, n_R, chance: float, seed: int = 0) -> np.ndarray:
  """(BOOTSTRAP, 2) refits of the map to the runs resampled with replacement."""
  rng = np.random.default_rng(seed)
  loss_R, correct_R, n_R = (np.asarray(a, float) for a in (loss_R, correct_R, n_R))
  fits = []
  for _ in range(BOOTSTRAP):
    pick = rng.integers(0, len(loss_R), len(loss_R))
    fits.append(fit_map(loss_R[pick], correct_R[pick], n_R[pick], chance))
  return np.array(fits)


def predict_accuracy(loss: float, fit: tuple, bootstrap: np.ndarray, chance: float) -> dict:
  values = accuracy_at(loss, bootstrap[:, 0], bootstrap[:, 1], chance)
  low, high = np.percentile(values, [2.5, 97.5])
  return {
    'accuracy': float(accuracy_at(loss, *fit, chance)),
    'interval': [float(low), float(high)],
  }


# --- predict -----------------------------------------------------------------------------------


def read_json(path: str) -> dict:
  if not os.path.isfile(path):
    raise UserError(f'no {path}')
  with open(path) as f:
    return json.load(f)


def evaluate(workdirs: list[str], task_names: str, seed: int = 0) -> list[dict]:
  """zero_shot_size's rows (accuracy, its per-example bits, the validation loss) per workdir."""
  args = argparse.Namespace(workdirs=workdirs, tasks=task_names, limit=0, seed=seed)
  return zero_shot_size.evaluate_all(args)


def fit_all(rows: list[dict]) -> dict:
  """Per task: the map (k, L0), its bootstrap refits, and the fit's points."""
  maps = {}
  for task in dict.fromkeys(r['task'] for r in rows):
    task_rows = [r for r in rows if r['task'] == task]
    chance = task_rows[0]['chance']
    loss_R = [r['eval_loss'] for r in task_rows]
    n_R = [r['n'] for r in task_rows]
    correct_R = [round(r['accuracy'] * r['n']) for r in task_rows]
    fit = fit_map(loss_R, correct_R, n_R, chance)
    maps[task] = {
      'chance': chance,
      'k': fit[0],
      'L0': fit[1],
      'bootstrap': bootstrap_maps(loss_R, correct_R, n_R, chance).tolist(),
      'points': [
        {'model': r['model'], 'eval_loss': r['eval_loss'], 'accuracy': r['accuracy'], 'n': r['n']}
        for r in task_rows
      ],
    }
  return maps


def predictions(ladder: dict, maps: dict) -> list[dict]:
  out = []
  for target in ladder['targets']:
    for task, m in maps.items():
      fit, bootstrap = (m['k'], m['L0']), np.array(m['bootstrap'])
      out.append(
        {
          'target': target['name'],
          'task': task,
          'predicted_loss': target['predicted'],
          **predict_accuracy(target['predicted'], fit, bootstrap, m['chance']),
        }
      )
  return out


def git_commit() -> str:
  try:
    return subprocess.run(
      ['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def run_predict(args) -> None:
  path = os.path.join(args.out, 'prediction.json')
  if os.path.exists(path):  # a prediction is made once, before its check
    raise UserError(f'{path} exists already; remove it, or predict into another --out')
  ladder = read_json(args.ladder)
  workdirs = [os.path.join(args.root, name) for name in ladder['fit_runs']]
  rows = evaluate(workdirs, args.tasks, args.seed)
  maps = fit_all(rows)
  prediction = {
    'predicted_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'git_commit': git_commit(),
    'ladder': args.ladder,
    'tasks': args.tasks.split(','),
    'maps': maps,
    'predictions': predictions(ladder, maps),
    'fit_rows': rows,
  }
  os.makedirs(args.out, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(prediction, f, indent=1)
  for p in prediction['predictions']:
    print(
      f'{p["target"]} {p["task"]}: loss {p["predicted_loss"]:.4f} -> accuracy '
      f'{p["accuracy"]:.3f} [{p["interval"][0]:.3f}, {p["interval"][1]:.3f}]'
    )
  print(f'wrote {args.out}/prediction.json: commit it before running check')


# --- check -------------------------------------------------------------------------------------


def compare(predicted: dict, measured: dict, m: dict) -> dict:
  """The predicted against the measured accuracy of one run and task."""
  fit, bootstrap = (m['k'], m['L0']), np.array(m['bootstrap'])
  step2 = predict_accuracy(measured['eval_loss'], fit, bootstrap, m['chance'])
  error = predicted['accuracy'] - measured['accuracy']
  half_width = (predicted['interval'][1] - predicted['interval'][0]) / 2
  allowed = math.hypot(half_width, 2 * measured['stderr'])
  return {
    'target': predicted['target'],
    'run': measured['model'],
    'task': predicted['task'],
    'predicted_loss': predicted['predicted_loss'],
    'trained_loss': measured['eval_loss'],
    'predicted_accuracy': predicted['accuracy'],
    'predicted_interval': predicted['interval'],
    'measured_accuracy': measured['accuracy'],
    'measured_stderr': measured['stderr'],
    'error': error,
    'allowed': allowed,
    'verdict': 'within' if abs(error) <= allowed else 'outside',
    'step2_only_accuracy': step2['accuracy'],
    'step2_only_error': step2['accuracy'] - measured['accuracy'],
  }


def map_only(rows: list[dict], maps: dict) -> list[dict]:
  """The map at each --also row's trained loss, against its measured accuracy."""
  out = []
  for r in rows:
    m = maps[r['task']]
    p = predict_accuracy(r['eval_loss'], (m['k'], m['L0']), np.array(m['bootstrap']), m['chance'])
    out.append(
      {
        'model': r['model'],
        'task': r['task'],
        'trained_loss': r['eval_loss'],
        'predicted_accuracy': p['accuracy'],
        'predicted_interval': p['interval'],
        'measured_accuracy': r['accuracy'],
        'measured_stderr': r['stderr'],
        'error': p['accuracy'] - r['accuracy'],
      }
    )
  return out


def summary(comparisons: list[dict], key: str = 'error') -> dict:
  by_task = {}
  for c in comparisons:
    by_task.setdefault(c['task'], []).append(c)
  out = {}
  for task, cs in by_task.items():
    out[task] = {'mean_abs_error': float(np.mean([abs(c[key]) for c in cs])), 'runs': len(cs)}
    if all('verdict' in c for c in cs):  # the map-only rows (--also) have no verdict
      out[task]['within'] = sum(c['verdict'] == 'within' for c in cs)
  return out


def run_check(args) -> None:
  prediction = read_json(os.path.join(args.out, 'prediction.json'))
  check_path = os.path.join(args.out, 'check.json')
  if args.report_only:
    result = read_json(check_path)
  else:
    best = {r['name']: r['best_run'] for r in read_json(args.ladder_check)['runs']}
    targets = list(dict.fromkeys(p['target'] for p in prediction['predictions']))
    missing = [t for t in targets if t not in best]
    if missing:
      raise UserError(f'{args.ladder_check} has no trained run for {", ".join(missing)}')
    workdirs = [os.path.join(args.root, best[t]) for t in targets]
    rows = evaluate(workdirs, ','.join(prediction['tasks']), args.seed)
    measured = {(r['model'], r['task']): r for r in rows}
    comparisons = [
      compare(p, measured[best[p['target']], p['task']], prediction['maps'][p['task']])
      for p in prediction['predictions']
    ]
    also = []
    if args.also:
      also_rows = evaluate(zero_shot_size.expand(args.also), ','.join(prediction['tasks']))
      also = map_only(also_rows, prediction['maps'])
    result = {
      'checked_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'predicted_at': prediction['predicted_at'],
      'comparisons': comparisons,
      'summary': summary(comparisons),
      'summary_step2_only': summary(comparisons, 'step2_only_error'),
      'map_only': also,
      'summary_map_only': summary(also) if also else {},
      'rows': rows,
    }
    with open(check_path, 'w') as f:
      json.dump(result, f, indent=1)
  print(report(result))
  plot(prediction, result, os.path.join(args.out, f'{NAME}.png'))
  print(f'wrote {args.out}/{"" if args.report_only else "check.json and "}{NAME}.png')


def report(result: dict) -> str:
  lines = []
  for c in result['comparisons']:
    lines.append(
      f'{c["run"]} {c["task"]}: predicted {c["predicted_accuracy"]:.3f} '
      f'[{c["predicted_interval"][0]:.3f}, {c["predicted_interval"][1]:.3f}] at loss '
      f'{c["predicted_loss"]:.4f}; measured {c["measured_accuracy"]:.3f} ± '
      f'{c["measured_stderr"]:.3f} at {c["trained_loss"]:.4f}; error {c["error"]:+.3f} '
      f'({c["verdict"]}); step 2 alone {c["step2_only_error"]:+.3f}'
    )
  for task, s in result['summary'].items():
    step2 = result['summary_step2_only'][task]['mean_abs_error']
    lines.append(
      f'{task}: mean |error| {s["mean_abs_error"]:.3f} (step 2 alone {step2:.3f}); '
      f'{s["within"]} of {s["runs"]} within'
    )
  for task, s in result['summary_map_only'].items():
    lines.append(f'{task}, --also runs through the map: mean |error| {s["mean_abs_error"]:.3f}')
  return '\n'.join(lines)


def plot(prediction: dict, result: dict, path: str) -> None:
  tasks = prediction['tasks']
  fig = Figure(figsize=(5.5 * len(tasks), 4.2), layout='constrained')
  axes = np.atleast_1d(fig.subplots(1, len(tasks)))
  for ax, task in zip(axes, tasks):
    m = prediction['maps'][task]
    points = m['points']
    checked = [c for c in result['comparisons'] if c['task'] == task]
    also = [a for a in result['map_only'] if a['task'] == task]
    losses = [p['eval_loss'] for p in points] + [c['trained_loss'] for c in checked]
    grid = np.linspace(min(losses) - 0.05, max(losses) + 0.05, 200)
    bootstrap = np.array(m['bootstrap'])
    band = accuracy_at(grid[:, None], bootstrap[:, 0], bootstrap[:, 1], m['chance'])
    ax.fill_between(grid, *np.percentile(band, [2.5, 97.5], axis=1), alpha=0.2, color='C0')
    ax.plot(grid, accuracy_at(grid, m['k'], m['L0'], m['chance']), color='C0', label='map')
    ax.plot(
      [p['eval_loss'] for p in points],
      [p['accuracy'] for p in points],
      'o',
      color='C0',
      ms=4,
      label='fit runs (C <= 4e12)',
    )
    if also:
      ax.errorbar(
        [a['trained_loss'] for a in also],
        [a['measured_accuracy'] for a in also],
        yerr=[a['measured_stderr'] for a in also],
        fmt='s',
        color='C2',
        ms=4,
        capsize=2,
        label='--also, measured (post hoc)',
      )
    ax.errorbar(
      [c['predicted_loss'] for c in checked],
      [c['predicted_accuracy'] for c in checked],
      yerr=np.abs(
        np.array([c['predicted_interval'] for c in checked]).T
        - [c['predicted_accuracy'] for c in checked]
      ),
      fmt='D',
      mfc='none',
      color='C3',
      capsize=3,
      label='held out, predicted (two steps)',
    )
    ax.errorbar(
      [c['trained_loss'] for c in checked],
      [c['measured_accuracy'] for c in checked],
      yerr=[c['measured_stderr'] for c in checked],
      fmt='D',
      color='C1',
      capsize=3,
      label='held out, measured',
    )
    ax.axhline(m['chance'], ls='--', color='grey', lw=1)
    ax.invert_xaxis()
    ax.set(xlabel='validation loss (nats/byte)', ylabel='zero-shot accuracy', title=task)
    ax.legend(fontsize=7)
  fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('mode', choices=('predict', 'check'))
  parser.add_argument('--root', default=os.path.join('runs', 'isoflop_study'))
  parser.add_argument(
    '--ladder', default=os.path.join(ISOFLOP_RESULTS, 'ladder_prediction_C1.6e13.json')
  )
  parser.add_argument(
    '--ladder_check', default=os.path.join(ISOFLOP_RESULTS, 'ladder_check_C1.6e13.json')
  )
  parser.add_argument('--tasks', default=TASKS, help='comma-separated (predict only)')
  parser.add_argument('--also', nargs='*', default=[], help='check: more workdirs for the map')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--report_only', action='store_true', help='check: from check.json')
  parser.add_argument('--out', default=RESULTS)
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    (run_predict if args.mode == 'predict' else run_check)(args)


if __name__ == '__main__':
  main()
