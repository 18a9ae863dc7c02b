"""The ladder check: predict a larger budget's runs from the smaller budgets' law, commit the
prediction, then train the runs and compare.

  prediction = ladder.predict(rows, targets, budget=4e12, fit_below=1e12)  # before training
  ladder.write_prediction(prediction, 'experiments/results/X/ladder_prediction.json')
  ... train the targets ...
  check = ladder.check(prediction, rows_after)

The prediction refuses targets that already have a results row: what is predicted must not have
been seen. Both fits use the tuned frontier (the best run of every (N, D) over the learning rates
tried) of the single-epoch runs at C <= fit_below: Approach 3's L(N, D) predicts every target's
loss and the compute-optimal (N, D) at the budget; Approach 2's N_opt(C) is given beside it.
"""

import datetime
import json
import os
import subprocess

import numpy as np

from gptjax.errors import UserError
from gptjax.scaling import laws, selection, tuning


def predict(
  rows: list[dict],
  targets: list[dict],
  budget: float,
  fit_below: float,
  n_col: str = 'N',
  tune_field: str = 'train.lr',
  place_optimum=None,
) -> dict:
  """The prediction for `targets` at compute `budget`, from the rows with C <= fit_below (times
  the budget grouping's spread). A target is {'name', 'N', 'D', 'runs'}: a model size and data
  size (N in the units of n_col), and the names of the runs that will train it, one per learning
  rate tried; its loss is theirs at the best rate. place_optimum(N_opt) -> a target: the runs that
  will test the predicted compute-optimal size, added to the targets (marked 'optimum')."""
  trained = {row['name'] for row in rows}

  def refuse_trained(targets: list[dict], what: str) -> None:
    seen = sorted(name for t in targets for name in t['runs'] if name in trained)
    if seen:
      raise UserError(f'{", ".join(seen)} trained already: {what}')

  refuse_trained(targets, 'a prediction must be made before its runs exist')
  below = [row for row in rows if row['C'] <= fit_below * laws.BUDGET_SPREAD]
  frontier, found = tuning.tuned_frontier(
    [row for row in below if row.get('eval_loss') is not None], tune_field
  )
  source = 'the runs below the ladder budget'
  chosen = selection.select(frontier, 'chinchilla', n_col=n_col, source=source)
  law = laws.fit(chosen.obs, 'chinchilla')
  try:
    isoflop = laws.fit(
      selection.select(frontier, 'isoflop', n_col=n_col, source=source).obs, 'isoflop'
    )
  except UserError as e:  # Approach 2 is a cross-check: Approach 3 predicts
    isoflop, isoflop_problem = None, str(e)
  n_opt, d_opt = law.compute_optimal(budget)
  if place_optimum is not None:
    targets = [*targets, {**place_optimum(float(n_opt)), 'optimum': True}]
    refuse_trained(targets[-1:], 'the optimum must be predicted first')
  predicted = law.predict(np.array([t['N'] for t in targets]), np.array([t['D'] for t in targets]))
  return {
    'predicted_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'git_commit': _git_commit(),
    'budget': budget,
    'fit_below': fit_below,
    'n_col': n_col,
    'fit_runs': sorted(chosen.obs.names),
    'fit_budgets': [
      float(np.exp(np.log(chosen.obs.c[g]).mean())) for g in laws.group_by_compute(chosen.obs.c)
    ],
    'left_out': chosen.as_json(),
    'lr_at_grid_edge': sorted(o.best_run for _, o in found if o.at_edge),
    'chinchilla': {k: float(getattr(law, k)) for k in ('E', 'A', 'B', 'alpha', 'beta', 'a', 'b')},
    'isoflop': {
      'a': float(isoflop.a),
      'b': float(isoflop.b),
      'budgets': [float(b.compute) for b in isoflop.budgets],
      'skipped': list(isoflop.skipped),
    }
    if isoflop
    else {'not_fitted': isoflop_problem},
    'optimum': {
      'N': float(n_opt),
      'D': float(d_opt),
      'loss': float(law.predict(n_opt, d_opt)),
      **({'N_approach2': float(isoflop.n_opt(budget))} if isoflop else {}),
    },
    'targets': [
      {**t, 'predicted': float(p)} for t, p in zip(targets, np.asarray(predicted, float))
    ],
  }


def write_prediction(prediction: dict, path: str) -> None:
  """Writes the prediction; an existing one is never replaced (commit it, train, then check)."""
  if os.path.exists(path):
    raise UserError(f'{path} exists: a committed prediction is not remade; check against it')
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'x') as f:
    json.dump(prediction, f, indent=1)
    f.write('\n')


def check(prediction: dict, rows: list[dict], noise: float | None = None) -> dict:
  """Each target against the best of its trained runs; the mean absolute relative error, and
  each error in units of the seed noise (a loss standard deviation) where one is given."""
  losses = {row['name']: row['eval_loss'] for row in rows if row.get('eval_loss') is not None}
  results, missing = [], []
  optimum_name = next((t['name'] for t in prediction['targets'] if t.get('optimum')), None)
  for target in prediction['targets']:
    trained = {name: losses[name] for name in target['runs'] if name in losses}
    if len(trained) < len(target['runs']):
      missing.append(target['name'])
    if not trained:
      continue
    best_run = min(trained, key=trained.get)
    actual = trained[best_run]
    difference = target['predicted'] - actual
    results.append(
      {
        'name': target['name'],
        'best_run': best_run,
        'predicted': target['predicted'],
        'actual': actual,
        'relative_error': difference / actual,
        **({'error_in_noise_sd': difference / noise} if noise else {}),
      }
    )
  if not results:
    raise UserError('none of the predicted runs has a result yet: train them, then check')
  optimum = next((r for r in results if r['name'] == optimum_name), None)
  return {
    'predicted_at': prediction['predicted_at'],
    'law': 'chinchilla (Approach 3), fitted to the tuned frontier',
    'fit_budgets': prediction['fit_budgets'],
    'optimum': {
      'C': prediction['budget'],
      'N_opt': prediction['optimum']['N'],
      'D_opt': prediction['optimum']['D'],
      'predicted loss': prediction['optimum']['loss'],
      **({'trained loss': optimum['actual'], 'run': optimum['best_run']} if optimum else {}),
    },
    'checked_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'runs': results,
    'incomplete': missing,  # targets with runs still untrained
    'mean_abs_relative_error': float(np.mean([abs(r['relative_error']) for r in results])),
    'seed_noise_sd': noise,
  }


def _git_commit() -> str:
  """The commit the prediction was made at ('' outside a git checkout)."""
  try:
    out = subprocess.run(
      ['git', 'rev-parse', 'HEAD'],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.abspath(__file__)),
      timeout=10,
    )
  except (OSError, subprocess.SubprocessError):
    return ''
  return out.stdout.strip() if out.returncode == 0 else ''
