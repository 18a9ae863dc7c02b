"""What python -m gptjax.scaling prints: a fit or a hold-out test as a readable table, or as one
JSON object (--json) for scripts. report.py puts the same fit tables in report.md. Both say which
runs the fit used and why it left the others out (selection.py), and a fit that is not identified
(uncertainty.identification) prints why in place of its numbers; its JSON keeps the numbers beside
`identified: false` and `why`.
"""

import numpy as np

from gptjax.scaling.laws import HUBER_DELTA, summary
from gptjax.scaling.selection import Selection
from gptjax.scaling.uncertainty import CI_LEVEL, FitResult


def format_selection(chosen: Selection | None, indent: str = '  ') -> list[str]:
  """The lines that name the runs a selection left out, one line per reason."""
  if chosen is None:
    return []
  return [
    f'{indent}left out {len(names)}, {why}: {", ".join(names)}'
    for why, names in chosen.by_reason().items()
  ]


def selection_json(chosen: Selection | None, runs: int) -> dict:
  """runs (those used), runs_in_input and dropped ([{name, why}]) of a selection."""
  if chosen is None:
    return {'runs': runs}
  return {'runs': runs, 'runs_in_input': chosen.total, 'dropped': chosen.as_json()}


def format_fit(result: FitResult, unit: str = 'runs') -> str:
  """A readable table of a fit, its confidence intervals and (for isoflop and chinchilla) the
  compute-optimal allocation."""
  law, fitted, obs, intervals = result.law, result.fitted, result.obs, result.intervals
  k, failed, loss_col = result.resamples, result.failed, result.loss_col
  formula = {
    'kaplan_n': 'L(N) = (N_c / N)^alpha_N',
    'kaplan_d': 'L(D) = (D_c / D)^alpha_D',
    'kaplan_c': 'L(C) = (C_c / C)^alpha_C',
    'isoflop': 'N_opt = k_N C^a, D_opt = k_D C^b',
    'chinchilla': 'L(N, D) = E + A / N^alpha + B / D^beta',
  }[law]
  if law.startswith('kaplan') and fitted.irreducible:
    formula = formula.replace('= (', '= E + (')
  chosen = result.selection
  used = f'{len(obs)} of {chosen.total} runs' if chosen is not None else f'{len(obs)} {unit}'
  lines = [
    f'{law}: {formula}',
    f'  {used}; loss column {loss_col}' + (f'; C: {obs.c_convention}' if obs.c_convention else ''),
    *format_selection(chosen),
  ]
  identified, why = result.identification
  if identified is False:
    lines.append(f'  not identified: {why}')
  else:
    ci_head = f'{CI_LEVEL:.0%} CI ({k - failed} bootstrap fits)' if intervals else ''
    lines.append(f'  {"parameter":<18} {"value":>12}   {ci_head}')
    for key, value in summary(law, fitted).items():
      ci = intervals.get(key)
      interval = f'[{_number(ci[0])}, {_number(ci[1])}]' if ci else ''
      lines.append(f'  {key:<18} {_number(value):>12}   {interval}')
    if identified is None:
      lines.append(f'  identification {why}')
  if law == 'isoflop':
    fitted_runs = sum(len(b.index) for b in fitted.budgets)
    lines.append(f'  the minima of {len(fitted.budgets)} budgets ({fitted_runs} runs):')
    lines.append(
      f'  {"budget C":>12} {"runs":>5} {"N_opt":>12} {"D_opt":>12} {"D/N":>8} {"L_opt":>8}'
    )
    for b in fitted.budgets:
      lines.append(
        f'  {b.compute:>12.4g} {len(b.index):>5} {b.n_opt:>12.4g} {b.d_opt:>12.4g} '
        f'{b.d_opt / b.n_opt:>8.3g} {b.loss_opt:>8.4f}'
      )
    lines += [f'  skipped budget {s}' for s in fitted.skipped]
  if law == 'chinchilla':
    lines.append(f'  Huber objective (sum over runs, delta {HUBER_DELTA}): {fitted.objective:.6g}')
    if identified is not False:
      lines.append(
        '  compute-optimal allocation at C = 6ND: N_opt = G (C/6)^a, D_opt = (C/6)^b / G'
      )
      lines.append(f'  {"C = 6ND":>12} {"N_opt":>12} {"D_opt":>12} {"D/N":>8}')
      for c in sorted({float((6 * obs.n * obs.d).min()), float((6 * obs.n * obs.d).max())}):
        n_opt, d_opt = fitted.compute_optimal(c)
        lines.append(f'  {c:>12.4g} {n_opt:>12.4g} {d_opt:>12.4g} {d_opt / n_opt:>8.3g}')
  if failed:
    lines.append(f'  ({failed} of {k} bootstrap resamples could not be fitted and are left out)')
  return '\n'.join(lines)


def _number(value: float) -> str:
  return f'{value:.4g}' if abs(value) < 1e4 else f'{value:.4e}'


def fit_json(result: FitResult) -> dict:
  """The fit as one JSON object: its numbers, runs (used), runs_in_input and dropped (with why,
  where it came from a selection), identified (true, false or null: not checked) and why."""
  law, fitted = result.law, result.fitted
  identified, why = result.identification
  summary_json = {
    'law': law,
    **summary(law, fitted),
    **selection_json(result.selection, len(result.obs)),
    'loss_col': result.loss_col,
    'C_convention': result.obs.c_convention,
    'bootstrap': result.resamples - result.failed,
    'ci95': result.intervals,
    'identified': identified,
    'why': why,
  }
  if law == 'chinchilla':
    summary_json['objective'] = fitted.objective
  if law == 'isoflop':
    summary_json['budgets'] = [
      {
        'C': b.compute,
        'runs': len(b.index),
        'N_opt': b.n_opt,
        'D_opt': b.d_opt,
        'loss_opt': b.loss_opt,
        'inside': b.inside,
      }
      for b in fitted.budgets
    ]
    summary_json['runs_fitted'] = sum(len(b.index) for b in fitted.budgets)
    summary_json['skipped_budgets'] = list(fitted.skipped)
  return summary_json


def format_holdout(
  law: str, hold_out: str, predictions: list[dict], runs: int, chosen: Selection | None = None
) -> str:
  """A table of the hold-out test's predictions (uncertainty.holdout) of `runs` runs in all,
  after the runs the selection `chosen` left out (if given)."""
  lines = []
  if chosen is not None:
    lines.append(f'{law}: {runs} of {chosen.total} runs')
    lines += format_selection(chosen)
  lines += [
    f'{law} fitted to {runs - len(predictions)} runs, predicting the '
    f'{len(predictions)} held out ({hold_out}):',
    f'  {"run":<24} {"C":>10} {"loss":>8} {"predicted":>10} {"error":>8}',
  ]
  for p in predictions:
    lines.append(
      f'  {p["name"]:<24} {p["C"]:>10.4g} {p["loss"]:>8.4f} {p["predicted"]:>10.4f} '
      f'{p["relative_error"]:>+8.2%}'
    )
  lines.append(f'  mean |relative error| {mean_abs_relative_error(predictions):.2%}')
  return '\n'.join(lines)


def holdout_json(
  law: str, hold_out: str, predictions: list[dict], chosen: Selection | None = None
) -> dict:
  """The hold-out test as one JSON object: runs (the predictions) and, where the runs came from
  a selection, selected (its runs), fitted_runs, runs_in_input and dropped ([{name, why}])."""
  result = {
    'law': law,
    'hold_out': hold_out,
    'runs': predictions,
    'mean_abs_relative_error': mean_abs_relative_error(predictions),
  }
  if chosen is not None:
    result.update(
      selected=len(chosen.rows),
      fitted_runs=len(chosen.rows) - len(predictions),
      runs_in_input=chosen.total,
      dropped=chosen.as_json(),
    )
  return result


def mean_abs_relative_error(predictions: list[dict]) -> float:
  return float(np.mean([abs(p['relative_error']) for p in predictions]))
