"""Scaling laws and their fits (N parameters, D training tokens, C training FLOPs, L the loss):

  kaplan_n, kaplan_d, kaplan_c  L(x) = (x_c / x)^alpha_x  [+ E with irreducible], least squares in
                                log space (Kaplan et al. 2020, eqs. 1.1-1.3).
  isoflop     Chinchilla Approach 2 (Hoffmann et al. 2022): per compute budget a parabola of L
              in log N (and one in log D); its minimum is N_opt(C), used only where it lies
              inside the sizes trained; then N_opt = k_N C^a and D_opt = k_D C^b.
  chinchilla  Chinchilla Approach 3 as Besiroglu et al. (2024) corrected it:
              L(N, D) = E + A / N^alpha + B / D^beta with
              log L_hat = LSE(a - alpha log N, b - beta log D, e), the SUM over runs of the Huber
              loss (delta 1e-3) of log L_hat - log L, L-BFGS from every point of a 4,500-point grid,
              the best kept. A mean instead of the sum makes L-BFGS stop early.

fit, predict and summary take any of them by name, for the bootstrap, the hold-out test
(uncertainty.py), the text and JSON output (formatting.py) and the report (report.py).
"""

import dataclasses
import itertools
import math

import numpy as np
import scipy.optimize

from gptjax.errors import UserError
from gptjax.scaling.lbfgs import batched_lbfgs
from gptjax.scaling.observations import Observations

LAWS = ('kaplan_n', 'kaplan_d', 'kaplan_c', 'isoflop', 'chinchilla')
HUBER_DELTA = 1e-3
# Approach 3's starting points (Hoffmann et al. 2022, app. D.2): every (a, b, e, alpha, beta) here.
CHINCHILLA_GRID = {
  'a': np.arange(0, 26, 5.0),
  'b': np.arange(0, 26, 5.0),
  'e': np.arange(-1, 1.01, 0.5),
  'alpha': np.arange(0, 2.01, 0.5),
  'beta': np.arange(0, 2.01, 0.5),
}
# Runs whose C lie within this factor of the smallest C of their group form one compute budget.
BUDGET_SPREAD = 1.5


def _exp(x: float) -> float:
  """e^x, inf rather than OverflowError for a degenerate fit (a flat law puts x_c at infinity)."""
  with np.errstate(over='ignore'):
    return float(np.exp(x))


def require(obs: Observations, law: str, irreducible: bool = False) -> None:
  """Raises UserError if `obs` lacks what `law` needs or has fewer runs than it has parameters."""
  needs = {
    'kaplan_n': ('n',),
    'kaplan_d': ('d',),
    'kaplan_c': ('c',),
    'isoflop': ('n', 'c'),
    'chinchilla': ('n', 'd'),
  }[law]
  flags = {'n': '--n_col', 'd': '--d_col', 'c': '--c_col (or N and D)'}
  for quantity in needs:
    if getattr(obs, quantity) is None:
      raise UserError(
        f'{law} needs {quantity.upper()}: the input has no such column ({flags[quantity]})'
      )
  n_params = {'isoflop': 3, 'chinchilla': 5}.get(law, 2 + irreducible)
  if len(obs) < n_params:
    raise UserError(f'{law} has {n_params} parameters but there are only {len(obs)} runs')


# ---------------------------------------------------------------------------------------------
# Kaplan et al.: L(x) = E + (x_c / x)^alpha


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(x) = E + (x_c / x)^alpha; E = 0 unless fitted with the irreducible term."""

  x_c: float
  alpha: float
  E: float = 0.0
  irreducible: bool = False

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.E + (self.x_c / np.asarray(x)) ** self.alpha


def fit_power_law(x: np.ndarray, loss: np.ndarray, irreducible: bool = False) -> PowerLaw:
  """Least squares of log L: a straight line in log-log without E; with E (bounded to
  [0, min L)), a nonlinear fit started from the line through L - E for a few E."""
  if len(set(x)) < 2:
    raise UserError('a power law needs runs at 2 or more distinct values of its variable')
  log_x, log_loss = np.log(x), np.log(loss)
  slope, intercept = np.polyfit(log_x, log_loss, 1)
  line = PowerLaw(x_c=_exp(-intercept / slope) if slope else math.inf, alpha=-slope)
  if not irreducible:
    return line

  def residuals(p):  # p = (log x_c, alpha, E)
    return np.log(p[2] + np.exp(p[1] * (p[0] - log_x))) - log_loss

  best = None
  ceiling = loss.min() * (1 - 1e-9)
  for fraction in (0.0, 0.5, 0.9):
    e = fraction * ceiling
    slope, intercept = np.polyfit(log_x, np.log(loss - e), 1)
    alpha = max(-slope, 1e-3)
    start = np.array([intercept / alpha, alpha, e])
    result = scipy.optimize.least_squares(
      residuals, start, bounds=([-np.inf, 0, 0], [np.inf, np.inf, ceiling])
    )
    if best is None or result.cost < best.cost:
      best = result
  log_x_c, alpha, e = best.x
  return PowerLaw(x_c=_exp(log_x_c), alpha=alpha, E=e, irreducible=True)


def pareto_frontier(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
  """Indices of the points no cheaper point beats, by increasing compute: Kaplan et al.'s
  L(C_min), the envelope of training curves. Of points at the same compute only the lowest loss
  can be on it, whatever their order."""
  frontier, best = [], math.inf
  for i in np.lexsort((loss, compute)):
    if loss[i] < best:
      frontier.append(i)
      best = loss[i]
  return np.array(frontier, dtype=int)


# ---------------------------------------------------------------------------------------------
# Chinchilla Approach 2: isoFLOP parabolas


@dataclasses.dataclass(frozen=True)
class IsoflopBudget:
  compute: float  # geometric mean of the runs' C
  index: np.ndarray  # the runs in this budget
  parabola: np.ndarray  # L = p[0] (log N)^2 + p[1] log N + p[2]
  n_opt: float
  d_opt: float  # from the parabola of L in log D
  loss_opt: float
  inside: bool  # whether N_opt lies within the sizes trained: always, fit_isoflop skips the others


@dataclasses.dataclass(frozen=True)
class IsoflopFit:
  """N_opt(C) = n_coefficient C^a and D_opt(C) = d_coefficient C^b over the usable budgets."""

  budgets: tuple[IsoflopBudget, ...]
  a: float
  n_coefficient: float
  b: float
  d_coefficient: float
  skipped: tuple[str, ...]  # budgets left out, with why ('C=3e+10 (4 runs): ...')

  def n_opt(self, c):
    return self.n_coefficient * np.asarray(c) ** self.a

  def d_opt(self, c):
    return self.d_coefficient * np.asarray(c) ** self.b


def group_by_compute(c: np.ndarray) -> list[np.ndarray]:
  """Runs grouped into compute budgets, by increasing C: a group takes every run whose C is within
  BUDGET_SPREAD times the group's smallest (runs planned at one budget differ a little when steps
  are rounded, or when C counts more than 6ND)."""
  groups, current, first = [], [], None
  for i in np.argsort(c, kind='stable'):
    if current and c[i] > BUDGET_SPREAD * first:
      groups.append(np.array(current))
      current = []
    if not current:
      first = c[i]
    current.append(i)
  groups.append(np.array(current))
  return groups


def parabola_minimum(log_x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, float] | None:
  """(coefficients, argmin in log x) of the least-squares parabola, or None if it opens downward."""
  coefficients = np.polyfit(log_x, loss, 2)
  if coefficients[0] <= 0:
    return None
  return coefficients, -coefficients[1] / (2 * coefficients[0])


def fit_isoflop(obs: Observations) -> IsoflopFit:
  """Approach 2: a parabola per budget with at least 3 distinct sizes and its minimum inside the
  sizes trained, then N_opt and D_opt as power laws of C (a straight line in log-log through the
  budgets' minima). A budget whose parabola opens downward, or whose minimum lies outside
  [min N, max N] of its runs (an extrapolation, not a measurement), is skipped and named."""
  require(obs, 'isoflop')
  budgets, skipped = [], []
  for index in group_by_compute(obs.c):
    compute = float(np.exp(np.log(obs.c[index]).mean()))
    where = f'C={compute:.3g} ({len(index)} runs)'
    if len(set(obs.n[index])) < 3:
      skipped.append(f'{where}: {len(set(obs.n[index]))} model size(s), a parabola needs 3')
      continue
    in_n = parabola_minimum(np.log(obs.n[index]), obs.loss[index])
    in_d = parabola_minimum(np.log(obs.d[index]), obs.loss[index])
    if in_n is None or in_d is None:
      skipped.append(f'{where}: the loss has no minimum (the parabola opens downward)')
      continue
    (parabola, log_n_opt), (_, log_d_opt) = in_n, in_d
    n_opt, low, high = _exp(log_n_opt), obs.n[index].min(), obs.n[index].max()
    if not low <= n_opt <= high:
      size = lambda n: f'{n:,.0f}' if n < 1e7 else f'{n:.4g}'
      skipped.append(
        f'{where}: the minimum N_opt={size(n_opt)} lies outside the sizes trained '
        f'({size(low)} to {size(high)}), an extrapolation'
      )
      continue
    budgets.append(
      IsoflopBudget(
        compute=compute,
        index=index,
        parabola=parabola,
        n_opt=n_opt,
        d_opt=_exp(log_d_opt),
        loss_opt=float(np.polyval(parabola, log_n_opt)),
        inside=True,
      )
    )
  if len(budgets) < 2:
    raise UserError(
      f'isoflop needs 2 compute budgets with 3 or more model sizes and the minimum inside them; '
      f'found {len(budgets)} ({"; ".join(skipped) or "no budgets"})'
    )
  log_c = np.log([b.compute for b in budgets])
  a, log_kn = np.polyfit(log_c, np.log([b.n_opt for b in budgets]), 1)
  b, log_kd = np.polyfit(log_c, np.log([b.d_opt for b in budgets]), 1)
  return IsoflopFit(
    tuple(budgets),
    a=a,
    n_coefficient=_exp(log_kn),
    b=b,
    d_coefficient=_exp(log_kd),
    skipped=tuple(skipped),
  )


@dataclasses.dataclass(frozen=True)
class IsoflopValley:
  """Approach 2 carried to every run of a budget: its isoFLOP curve as the parabola in log N
    L(N; C) = L_opt(C) + kappa (L_opt(C) - E) (log N - log N_opt(C))^2,
  N_opt(C) Approach 2's power law, L_opt(C) = E + (C_c / C)^gamma through the budgets' minima, and
  one kappa for all budgets. Why one: on Chinchilla's surface an isoFLOP curve's second
  derivative in log N at its minimum is alpha beta times the reducible loss there, at every C, so
  the parabola's coefficient over the reducible loss is a constant (alpha beta / 2)."""

  isoflop: IsoflopFit
  loss_opt: PowerLaw  # irreducible: loss_opt.E is E
  kappa: float

  def predict(self, n, c) -> np.ndarray:
    """The loss of N parameters trained with compute C."""
    best = self.loss_opt.predict(c)
    offset = np.log(np.asarray(n)) - np.log(self.isoflop.n_opt(c))
    return best + self.kappa * (best - self.loss_opt.E) * offset**2


def fit_isoflop_valley(obs: Observations) -> IsoflopValley:
  """The valley law from fit_isoflop's budgets: 3 or more with their minimum inside, as
  L_opt(C) has 3 parameters."""
  isoflop = fit_isoflop(obs)
  budgets = isoflop.budgets
  if len(budgets) < 3:
    raise UserError(
      f'the isoFLOP valley needs 3 budgets with their minimum inside the sizes; found '
      f'{len(budgets)} ({"; ".join(isoflop.skipped) or "no others"})'
    )
  loss_opt = fit_power_law(
    np.array([b.compute for b in budgets]), np.array([b.loss_opt for b in budgets]), True
  )
  reducible = np.array([b.loss_opt for b in budgets]) - loss_opt.E
  kappa = float(np.mean([b.parabola[0] for b in budgets] / reducible))
  return IsoflopValley(isoflop, loss_opt, kappa)


# ---------------------------------------------------------------------------------------------
# Chinchilla Approach 3: L(N, D) = E + A / N^alpha + B / D^beta


@dataclasses.dataclass(frozen=True)
class ChinchillaLaw:
  E: float
  A: float
  B: float
  alpha: float
  beta: float
  objective: float = math.nan  # the Huber objective at the fit

  @classmethod
  def from_theta(cls, theta: np.ndarray, objective: float = math.nan) -> 'ChinchillaLaw':
    a, b, e, alpha, beta = (float(v) for v in theta)
    return cls(E=_exp(e), A=_exp(a), B=_exp(b), alpha=alpha, beta=beta, objective=objective)

  @property
  def theta(self) -> np.ndarray:
    return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

  def predict(self, n, d) -> np.ndarray:
    return self.E + self.A / np.asarray(n) ** self.alpha + self.B / np.asarray(d) ** self.beta

  @property
  def a(self) -> float:  # N_opt grows as C^a
    return self.beta / (self.alpha + self.beta)

  @property
  def b(self) -> float:  # D_opt grows as C^b
    return self.alpha / (self.alpha + self.beta)

  @property
  def G(self) -> float:
    return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

  def compute_optimal(self, c) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) minimising L at C = 6ND (Hoffmann et al. eq. 4): N_opt = G (C/6)^a,
    D_opt = (C/6)^b / G."""
    c6 = np.asarray(c) / 6
    return self.G * c6**self.a, c6**self.b / self.G


def chinchilla_objective(
  log_n: np.ndarray,
  log_d: np.ndarray,
  log_loss: np.ndarray,
  delta: float = HUBER_DELTA,
  reduce: str = 'sum',
):
  """f(theta (K, 5), rows (K,)) -> (objective (K,), gradient (K, 5)) of K parameter vectors
  (a, b, e, alpha, beta): the Huber loss of log L_hat - log L, summed (or averaged) over runs.
  The data are (1, runs), shared by every row, or (K_data, runs), one data set per row (bootstrap);
  `rows` says which data set each parameter vector is scored on."""
  if reduce not in ('sum', 'mean'):
    raise ValueError(f'reduce={reduce!r}; use sum or mean')
  scale = 1.0 if reduce == 'sum' else 1.0 / log_loss.shape[1]

  def value_and_grad(theta: np.ndarray, rows: np.ndarray):
    pick = lambda x: x if x.shape[0] == 1 else x[rows]
    ln, ld, ll = pick(log_n), pick(log_d), pick(log_loss)
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    terms = np.stack(np.broadcast_arrays(a - alpha * ln, b - beta * ld, e))  # (3, K, runs)
    top = terms.max(0)
    weights = np.exp(terms - top)
    total = weights.sum(0)
    weights /= total  # softmax: d LSE / d term
    residual = top + np.log(total) - ll
    small = np.abs(residual) <= delta
    huber = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))
    slope = np.clip(residual, -delta, delta) * weights  # (3, K, runs)
    grad = np.stack(
      [
        slope[0].sum(1),
        slope[1].sum(1),
        slope[2].sum(1),
        -(slope[0] * ln).sum(1),
        -(slope[1] * ld).sum(1),
      ],
      axis=1,
    )
    return huber.sum(1) * scale, grad * scale

  return value_and_grad


def grid_starts(grid: dict[str, list[float]] = CHINCHILLA_GRID) -> np.ndarray:
  """Every combination of the grid's values, as rows (a, b, e, alpha, beta)."""
  return np.array(list(itertools.product(*(grid[k] for k in ('a', 'b', 'e', 'alpha', 'beta')))))


def fit_chinchilla(
  n: np.ndarray,
  d: np.ndarray,
  loss: np.ndarray,
  starts: np.ndarray | None = None,
  delta: float = HUBER_DELTA,
  reduce: str = 'sum',
) -> ChinchillaLaw:
  """Approach 3 with Besiroglu et al.'s corrections: L-BFGS from every start (by default the
  4,500-point CHINCHILLA_GRID, all at once with batched_lbfgs), then scipy's L-BFGS-B from the best
  end point to finish it by the same rules."""
  objective = chinchilla_objective(
    np.log(n)[None], np.log(d)[None], np.log(loss)[None], delta, reduce
  )
  starts = grid_starts() if starts is None else np.atleast_2d(starts)
  x, f = batched_lbfgs(objective, starts)
  best = x[np.nanargmin(f)]
  single = lambda theta: tuple(v[0] for v in objective(theta[None], np.zeros(1, int)))
  result = scipy.optimize.minimize(single, best, jac=True, method='L-BFGS-B')
  if result.fun <= np.nanmin(f):
    best = result.x
  return ChinchillaLaw.from_theta(best, objective=float(single(best)[0]))


# ---------------------------------------------------------------------------------------------
# Any law by name


def fit(obs: Observations, law: str, irreducible: bool = False):
  """The fitted law: a PowerLaw (kaplan_*), an IsoflopFit or a ChinchillaLaw."""
  require(obs, law, irreducible)
  if law == 'isoflop':
    return fit_isoflop(obs)
  if law == 'chinchilla':
    return fit_chinchilla(obs.n, obs.d, obs.loss)
  return fit_power_law(_kaplan_x(obs, law), obs.loss, irreducible)


def _kaplan_x(obs: Observations, law: str) -> np.ndarray:
  return {'kaplan_n': obs.n, 'kaplan_d': obs.d, 'kaplan_c': obs.c}[law]


def predict(law: str, fitted, obs: Observations) -> np.ndarray:
  if law == 'chinchilla':
    return fitted.predict(obs.n, obs.d)
  if law == 'isoflop':
    raise UserError('isoflop predicts no loss for a run; use --law chinchilla or a kaplan law')
  return fitted.predict(_kaplan_x(obs, law))


def summary(law: str, fitted) -> dict[str, float]:
  """The fitted numbers by name (Kaplan et al.'s and Hoffmann et al.'s notation)."""
  if law == 'chinchilla':
    return {
      'E': fitted.E,
      'A': fitted.A,
      'B': fitted.B,
      'alpha': fitted.alpha,
      'beta': fitted.beta,
      'a': fitted.a,
      'b': fitted.b,
      'G': fitted.G,
    }
  if law == 'isoflop':
    return {
      'a': fitted.a,
      'b': fitted.b,
      'N_opt_coefficient': fitted.n_coefficient,
      'D_opt_coefficient': fitted.d_coefficient,
    }
  x = law[-1].upper()
  numbers = {f'{x}_c': fitted.x_c, f'alpha_{x}': fitted.alpha}
  if fitted.irreducible:
    numbers['E'] = fitted.E
  return numbers
