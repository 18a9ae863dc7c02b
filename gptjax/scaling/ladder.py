"""The ladder check: predict a larger budget's runs from the smaller budgets' law, commit the
prediction, then train the runs and compare.

  prediction = ladder.predict(rows, targets, budget=4e12, fit_below=1e12)  # before training
  ladder.write_prediction(prediction, 'experiments/results/X/ladder_prediction.json')
  ... train the targets ...
  check = ladder.check(prediction, rows_after)

The prediction refuses targets that already have a results row: what is predicted must not have
been seen. The laws are fitted to the tuned frontier (the best run of every (N, D) over the
learning rates tried) of the single-epoch runs at C <= fit_below. One law, chosen before the
prediction, predicts every target's loss and the compute-optimal (N, D) at the budget: Approach
3's L(N, D), or the isoFLOP valley (Approach 2's minima and the parabolas around them,
laws.IsoflopValley). The other's predictions are recorded beside it.
"""

import dataclasses
import datetime
import json
import os
import subprocess

import numpy as np

from gptjax.errors import UserError
from gptjax.scaling import laws, selection, tuning

LAWS = ('chinchilla', 'isoflop_valley')
LAW_NAMES = {
  'chinchilla': 'chinchilla (Approach 3)',
  'isoflop_valley': "isoflop_valley (Approach 2's minima and parabolas)",
}


def predict(
  rows: list[dict],
  targets: list[dict],
  budget: float,
  fit_below: float,
  n_col: str = 'N',
  tune_field: str = 'train.lr',
  place_optimum=None,
  law: str = 'chinchilla',
) -> dict:
  """The prediction for `targets` at compute `budget`, from the rows with C <= fit_below (times
  the budget grouping's spread). A target is {'name', 'N', 'D', 'runs'}: a model size and data
  size (N in the units of n_col), and the names of the runs that will train it, one per learning
  rate tried; its loss is theirs at the best rate. place_optimum(N_opt) -> a target: the runs that
  will test the predicted compute-optimal size, added to the targets (marked 'optimum'), or, if a
  target has its N and D already, that target marked.

  `law` (LAWS) makes the prediction that is checked: Approach 3's surface ('chinchilla') or
  Approach 2's minima with their parabolas ('isoflop_valley', laws.IsoflopValley). Every law
  that can be fitted is recorded beside it ('predicted_by_law'), so a check compares them all."""
  if law not in LAWS:
    raise UserError(f'law {law!r}: choose one of {", ".join(LAWS)}')
  trained = {row['name'] for row in rows}

  def refuse_trained(targets: list[dict], what: str) -> None:
    seen = sorted(name for t in targets for name in t['runs'] if name in trained)
    if seen:
      raise UserError(f'{", ".join(seen)} trained already: {what}')

  refuse_trained(targets, 'a prediction must be made before its runs exist')
  fitted = fit_laws(rows, fit_below, n_col, tune_field)
  if law not in fitted.by_law:
    raise UserError(f'{law} could not be fitted to the runs below the budget: {fitted.problem}')
  optima = {name: _optimum(name, predictor, budget) for name, predictor in fitted.by_law.items()}
  if place_optimum is not None:
    optimum = place_optimum(optima[law]['N'])
    same = [t for t in targets if (t['N'], t['D']) == (optimum['N'], optimum['D'])]
    if same:  # the optimum is one of the targets: its runs test it
      targets = [{**t, 'optimum': True} if t is same[0] else t for t in targets]
    else:
      targets = [*targets, {**optimum, 'optimum': True}]
      refuse_trained(targets[-1:], 'the optimum must be predicted first')
  n, d = np.array([t['N'] for t in targets]), np.array([t['D'] for t in targets])
  by_law = {name: predicted_loss(name, p, n, d, budget) for name, p in fitted.by_law.items()}
  isoflop, chinchilla = fitted.isoflop, fitted.by_law['chinchilla']
  valley = fitted.by_law.get('isoflop_valley')
  return {
    'predicted_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'git_commit': _git_commit(),
    'law': law,
    'budget': budget,
    'fit_below': fit_below,
    'n_col': n_col,
    'fit_runs': sorted(fitted.chosen.obs.names),
    'fit_budgets': [
      float(np.exp(np.log(fitted.chosen.obs.c[g]).mean()))
      for g in laws.group_by_compute(fitted.chosen.obs.c)
    ],
    'left_out': fitted.chosen.as_json(),
    'lr_at_grid_edge': fitted.lr_at_grid_edge,
    'chinchilla': {
      k: float(getattr(chinchilla, k)) for k in ('E', 'A', 'B', 'alpha', 'beta', 'a', 'b')
    },
    'isoflop': {
      'a': float(isoflop.a),
      'b': float(isoflop.b),
      'budgets': [float(b.compute) for b in isoflop.budgets],
      'skipped': list(isoflop.skipped),
      **(
        {
          'valley': {
            'E': float(valley.loss_opt.E),
            'C_c': float(valley.loss_opt.x_c),
            'gamma': float(valley.loss_opt.alpha),
            'kappa': valley.kappa,
          }
        }
        if valley
        else {}
      ),
    }
    if isoflop
    else {'not_fitted': fitted.problem},
    'optimum': optima[law],
    'optimum_by_law': optima,
    'targets': [
      {
        **t,
        'predicted': float(by_law[law][i]),
        'predicted_by_law': {name: float(p[i]) for name, p in by_law.items()},
      }
      for i, t in enumerate(targets)
    ],
  }


@dataclasses.dataclass(frozen=True)
class FittedLaws:
  """The laws fitted to the tuned frontier below a ladder budget."""

  chosen: selection.Selection  # the runs Approach 3 fitted
  by_law: dict  # {law in LAWS: its fitted law}, those that could be fitted
  isoflop: laws.IsoflopFit | None  # Approach 2 (its a is reported whichever law predicts)
  problem: str  # why Approach 2 or the valley could not be fitted ('' if both were)
  lr_at_grid_edge: list[str]


def fit_laws(rows: list[dict], fit_below: float, n_col: str, tune_field: str) -> FittedLaws:
  """Approach 3, Approach 2 and the isoFLOP valley, on the tuned frontier of the single-epoch
  runs with C <= fit_below (times the budget grouping's spread)."""
  below = [row for row in rows if row['C'] <= fit_below * laws.BUDGET_SPREAD]
  frontier, found = tuning.tuned_frontier(
    [row for row in below if row.get('eval_loss') is not None], tune_field
  )
  source = 'the runs below the ladder budget'
  chosen = selection.select(frontier, 'chinchilla', n_col=n_col, source=source)
  by_law = {'chinchilla': laws.fit(chosen.obs, 'chinchilla')}
  isoflop, problem = None, ''
  try:  # Approach 2 and its valley are fitted where the budgets allow
    isoflop_obs = selection.select(frontier, 'isoflop', n_col=n_col, source=source).obs
    isoflop = laws.fit(isoflop_obs, 'isoflop')
    by_law['isoflop_valley'] = laws.fit_isoflop_valley(isoflop_obs)
  except UserError as e:
    problem = str(e)
  edges = sorted(o.best_run for _, o in found if o.at_edge)
  return FittedLaws(chosen, by_law, isoflop, problem, edges)


def _optimum(law: str, predictor, budget: float) -> dict:
  """The compute-optimal (N, D) at `budget` and its loss, by one law."""
  if law == 'chinchilla':
    n_opt, d_opt = (float(x) for x in predictor.compute_optimal(budget))
    return {'N': n_opt, 'D': d_opt, 'loss': float(predictor.predict(n_opt, d_opt))}
  return {
    'N': float(predictor.isoflop.n_opt(budget)),
    'D': float(predictor.isoflop.d_opt(budget)),
    'loss': float(predictor.loss_opt.predict(budget)),
  }


def predicted_loss(law: str, predictor, n: np.ndarray, d: np.ndarray, budget: float) -> np.ndarray:
  """Each target's loss by one law: Approach 3 from its (N, D), the valley from N at the budget."""
  if law == 'chinchilla':
    return np.asarray(predictor.predict(n, d), float)
  return np.asarray(predictor.predict(n, budget), float)


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
        'relative_error_by_law': {
          law: (p - actual) / actual for law, p in target.get('predicted_by_law', {}).items()
        },
      }
    )
  if not results:
    raise UserError('none of the predicted runs has a result yet: train them, then check')
  optimum = next((r for r in results if r['name'] == optimum_name), None)
  law = prediction.get('law', 'chinchilla')  # predictions made before the valley law had none
  by_law = {}
  for name in results[0]['relative_error_by_law']:
    by_law[name] = float(np.mean([abs(r['relative_error_by_law'][name]) for r in results]))
  return {
    'predicted_at': prediction['predicted_at'],
    'law': f'{LAW_NAMES[law]}, fitted to the tuned frontier',
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
    'mean_abs_relative_error_by_law': by_law,
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
