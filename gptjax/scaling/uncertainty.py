"""How far to trust a fit: bootstrap confidence intervals and a hold-out test.

bootstrap refits a law to runs resampled with replacement and reports percentile intervals of its
numbers (from a seeded generator: the same runs and seed give the same digits); identification says
whether those intervals pin the law down at all; holdout fits it to all runs but those with the
most compute and predicts them, which is what a scaling law is for.
"""

import dataclasses
import math
from typing import Any

import numpy as np

from gptjax.errors import UserError
from gptjax.scaling.laws import (
  ChinchillaLaw,
  chinchilla_objective,
  fit,
  grid_starts,
  group_by_compute,
  predict,
  require,
  summary,
)
from gptjax.scaling.lbfgs import batched_lbfgs
from gptjax.scaling.observations import Observations

# Bootstrap refits start from the full fit and from this coarse grid (2^5 points), not the full one.
BOOTSTRAP_GRID = {
  'a': [5.0, 20.0],
  'b': [5.0, 20.0],
  'e': [-0.5, 0.5],
  'alpha': [0.5, 1.5],
  'beta': [0.5, 1.5],
}
CI_LEVEL = 0.95
# A fit is not identified (formatting.py prints why instead of its numbers) when the CI_LEVEL
# interval of an exponent is wider than EXPONENT_WIDTH, or that of the irreducible loss E spans
# more than COEFFICIENT_DECADES orders of magnitude (or reaches 0); when more than
# FAILED_FRACTION of the bootstrap resamples could not be fitted; or when Approach 2 has fewer
# than ISOFLOP_BUDGETS usable budgets (a line through two budgets' minima fits them exactly,
# whatever its error).
EXPONENT_WIDTH = 1.0
COEFFICIENT_DECADES = 3.0
FAILED_FRACTION = 0.5
ISOFLOP_BUDGETS = 3
EXPONENTS = ('alpha', 'beta', 'a', 'b', 'alpha_N', 'alpha_D', 'alpha_C')  # of laws.summary's keys
# The other coefficients (A, B, G, x_c, the N_opt coefficient) follow from an exponent: a small
# change of alpha moves A by decades, so their intervals are wide whenever the data span little;
# they are judged through the exponents.


@dataclasses.dataclass(frozen=True)
class FitResult:
  """A law fitted to runs, with its bootstrap intervals: what formatting.py prints."""

  law: str
  fitted: Any
  obs: Observations
  loss_col: str
  intervals: dict[str, list[float]] = dataclasses.field(default_factory=dict)
  resamples: int = 0  # bootstrap resamples asked for
  failed: int = 0  # of them, those that could not be fitted
  selection: Any = None  # the selection.Selection obs came from, if any: what was left out, why

  @property
  def identification(self) -> tuple[bool | None, str]:
    """(identified, why not): see identification."""
    return identification(self.law, self.fitted, self.intervals, self.resamples, self.failed)


def identification(
  law: str, fitted, intervals: dict[str, list[float]], resamples: int, failed: int
) -> tuple[bool | None, str]:
  """(False, the reasons) if the fit is not identified by the rules stated above EXPONENT_WIDTH;
  (None, why) if there were no bootstrap resamples to judge it by and nothing else fails it;
  (True, '') otherwise."""
  reasons = []
  if law == 'isoflop' and len(fitted.budgets) < ISOFLOP_BUDGETS:
    reasons.append(
      f'{len(fitted.budgets)} usable compute budgets; Approach 2 needs {ISOFLOP_BUDGETS} '
      'for its line through their minima to be tested (budgets whose minimum lies outside the '
      'sizes trained are skipped)'
    )
  if resamples and failed > FAILED_FRACTION * resamples:
    reasons.append(f'{failed} of {resamples} bootstrap resamples could not be fitted')
  for key, (low, high) in intervals.items():
    if key in EXPONENTS:
      if high - low > EXPONENT_WIDTH:
        reasons.append(
          f'the {CI_LEVEL:.0%} interval of {key} [{low:.3g}, {high:.3g}] is {high - low:.3g} '
          f'wide (an exponent is identified within {EXPONENT_WIDTH:g})'
        )
    elif key != 'E':
      continue
    elif low <= 0:
      reasons.append(f'the {CI_LEVEL:.0%} interval of {key} [{low:.3g}, {high:.3g}] reaches 0')
    elif math.log10(high / low) > COEFFICIENT_DECADES:
      reasons.append(
        f'the {CI_LEVEL:.0%} interval of {key} [{low:.3g}, {high:.3g}] spans '
        f'{math.log10(high / low):.3g} orders of magnitude (a coefficient is identified within '
        f'{COEFFICIENT_DECADES:g})'
      )
  if reasons:
    return False, '; '.join(reasons)
  if not resamples:
    return None, 'not checked: no bootstrap resamples (give --bootstrap K)'
  return True, ''


def fit_with_intervals(
  obs: Observations,
  law: str,
  loss_col: str,
  resamples: int = 0,
  seed: int = 0,
  irreducible: bool = False,
  selection=None,
) -> FitResult:
  """The law fitted to obs and, with resamples, its bootstrap intervals (seeded: the same obs,
  resamples and seed give the same intervals). selection: the selection.Selection obs came
  from, for the output to say which runs were left out."""
  fitted = fit(obs, law, irreducible)
  intervals, failed = (
    bootstrap(obs, law, fitted, resamples, seed, irreducible) if resamples else ({}, 0)
  )
  return FitResult(law, fitted, obs, loss_col, intervals, resamples, failed, selection)


def bootstrap(
  obs: Observations, law: str, fitted, k: int, seed: int = 0, irreducible: bool = False
) -> tuple[dict[str, list[float]], int]:
  """(CI_LEVEL percentile interval of each summary number over k refits to runs drawn with
  replacement, number of resamples that could not be fitted). isoflop resamples within each
  budget; chinchilla refits all resamples at once from the full fit and BOOTSTRAP_GRID."""
  rng = np.random.default_rng(seed)
  if law == 'isoflop':
    groups = [b.index for b in fitted.budgets]
    samples = [np.concatenate([rng.choice(g, len(g)) for g in groups]) for _ in range(k)]
  else:
    samples = [rng.integers(0, len(obs), len(obs)) for _ in range(k)]
  if law == 'chinchilla':
    refits = _bootstrap_chinchilla(obs, fitted, np.array(samples))
  else:
    refits = []
    for index in samples:
      try:
        refits.append(fit(obs.take(index), law, irreducible))
      except (UserError, np.linalg.LinAlgError, ValueError):
        pass  # e.g. a resample with fewer than 3 sizes in a budget
  numbers = [summary(law, r) for r in refits]
  numbers = [s for s in numbers if all(math.isfinite(v) for v in s.values())]
  tail = 100 * (1 - CI_LEVEL) / 2
  intervals = (
    {
      key: [
        float(np.percentile([s[key] for s in numbers], tail)),
        float(np.percentile([s[key] for s in numbers], 100 - tail)),
      ]
      for key in summary(law, fitted)
    }
    if numbers
    else {}
  )
  return intervals, k - len(numbers)


def _bootstrap_chinchilla(
  obs: Observations, fitted: ChinchillaLaw, samples: np.ndarray
) -> list[ChinchillaLaw]:
  k = len(samples)
  objective = chinchilla_objective(
    np.log(obs.n)[samples], np.log(obs.d)[samples], np.log(obs.loss)[samples]
  )
  per_resample = np.vstack([fitted.theta[None], grid_starts(BOOTSTRAP_GRID)])
  starts = np.tile(per_resample, (k, 1))
  data_row = np.repeat(np.arange(k), len(per_resample))
  x, f = batched_lbfgs(lambda theta, rows: objective(theta, data_row[rows]), starts)
  f = np.where(np.isfinite(f), f, np.inf).reshape(k, len(per_resample))
  best = x.reshape(k, len(per_resample), 5)[np.arange(k), f.argmin(1)]
  return [ChinchillaLaw.from_theta(theta) for theta in best]


def held_out(c: np.ndarray, hold_out: str) -> np.ndarray:
  """Boolean mask of the runs to hold out: 'largest' = the largest compute budget (as
  group_by_compute groups them), or an integer k = the k runs with the most compute."""
  mask = np.zeros(len(c), bool)
  if hold_out == 'largest':
    mask[group_by_compute(c)[-1]] = True
    return mask
  try:
    count = int(hold_out)
  except ValueError:
    raise UserError(f"--hold_out={hold_out!r}: give 'largest' or a number of runs") from None
  if not 0 < count < len(c):
    raise UserError(f'--hold_out={count}: hold out at least 1 and fewer than all {len(c)} runs')
  mask[np.argsort(c, kind='stable')[-count:]] = True
  return mask


def holdout(
  obs: Observations, law: str, hold_out: str = 'largest', irreducible: bool = False
) -> list[dict]:
  """Fits `law` to all runs but the held-out ones and predicts those: one dict per held-out run."""
  if law == 'isoflop':
    raise UserError('isoflop predicts no loss for a run; use --law chinchilla or a kaplan law')
  if obs.c is None:
    raise UserError('the hold-out test picks runs by compute: the input needs C, or N and D')
  mask = held_out(obs.c, hold_out)
  rest = obs.take(~mask)
  try:
    require(rest, law, irreducible)
  except UserError as e:
    raise UserError(f'after holding out {mask.sum()} run(s): {e}') from None
  fitted = fit(rest, law, irreducible)
  test = obs.take(mask)
  predicted = predict(law, fitted, test)
  quantity = lambda a, i: None if a is None else float(a[i])
  return [
    {
      'name': test.names[i],
      'N': quantity(test.n, i),
      'D': quantity(test.d, i),
      'C': float(test.c[i]),
      'loss': float(test.loss[i]),
      'predicted': float(predicted[i]),
      'relative_error': float((predicted[i] - test.loss[i]) / test.loss[i]),
    }
    for i in range(len(test))
  ]
