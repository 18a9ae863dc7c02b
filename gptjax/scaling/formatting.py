"""What python -m gptjax.scaling prints: a fit or a hold-out test as a readable table, or as one
JSON object (--json) for scripts. report.py puts the same fit tables in report.md.
"""

import numpy as np

from gptjax.scaling.laws import HUBER_DELTA, summary
from gptjax.scaling.uncertainty import CI_LEVEL, FitResult


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
  lines = [
    f'{law}: {formula}',
    f'  {len(obs)} {unit}; loss column {loss_col}'
    + (f'; C: {obs.c_convention}' if obs.c_convention else ''),
  ]
  ci_head = f'{CI_LEVEL:.0%} CI ({k - failed} bootstrap fits)' if intervals else ''
  lines.append(f'  {"parameter":<18} {"value":>12}   {ci_head}')
  for key, value in summary(law, fitted).items():
    ci = intervals.get(key)
    interval = f'[{_number(ci[0])}, {_number(ci[1])}]' if ci else ''
    lines.append(f'  {key:<18} {_number(value):>12}   {interval}')
  if law == 'isoflop':
    lines.append(
      f'  {"budget C":>12} {"runs":>5} {"N_opt":>12} {"D_opt":>12} {"D/N":>8} {"L_opt":>8}'
    )
    for b in fitted.budgets:
      lines.append(
        f'  {b.compute:>12.4g} {len(b.index):>5} {b.n_opt:>12.4g} {b.d_opt:>12.4g} '
        f'{b.d_opt / b.n_opt:>8.3g} {b.loss_opt:>8.4f}'
        + ('' if b.inside else '   (minimum outside the sizes trained)')
      )
    lines += [f'  skipped {s}' for s in fitted.skipped]
  if law == 'chinchilla':
    lines.append(f'  Huber objective (sum over runs, delta {HUBER_DELTA}): {fitted.objective:.6g}')
    lines.append('  compute-optimal allocation at C = 6ND: N_opt = G (C/6)^a, D_opt = (C/6)^b / G')
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
  law, fitted = result.law, result.fitted
  summary_json = {
    'law': law,
    **summary(law, fitted),
    'runs': len(result.obs),
    'loss_col': result.loss_col,
    'C_convention': result.obs.c_convention,
    'bootstrap': result.resamples - result.failed,
    'ci95': result.intervals,
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
  return summary_json


def format_holdout(law: str, hold_out: str, predictions: list[dict], runs: int) -> str:
  """A table of the hold-out test's predictions (uncertainty.holdout) of `runs` runs in all."""
  lines = [
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


def holdout_json(law: str, hold_out: str, predictions: list[dict]) -> dict:
  return {
    'law': law,
    'hold_out': hold_out,
    'runs': predictions,
    'mean_abs_relative_error': mean_abs_relative_error(predictions),
  }


def mean_abs_relative_error(predictions: list[dict]) -> float:
  return float(np.mean([abs(p['relative_error']) for p in predictions]))
