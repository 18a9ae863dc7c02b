"""Scaling-law fits: Kaplan et al.'s power laws, Chinchilla's Approaches 2 and 3, bootstrap
confidence intervals and a hold-out test.

  python -m gptjax.scaling fit runs/X/results.jsonl --law chinchilla --bootstrap 200 [--json]
  python -m gptjax.scaling fit my_runs.csv --law kaplan_n --n_col params --loss_col loss
  python -m gptjax.scaling report runs/X            # plots and report.md (gptjax/scaling_report.py)
  python -m gptjax.scaling holdout runs/X --hold_out largest

Laws (N parameters, D training tokens, C training FLOPs, L the loss):
  kaplan_n, kaplan_d, kaplan_c  L(x) = (x_c / x)^alpha_x  [+ E with --irreducible], least squares in
                                log space (Kaplan et al. 2020, eqs. 1.1-1.3).
  isoflop     Chinchilla Approach 2 (Hoffmann et al. 2022): per compute budget a parabola of L
              in log N (and one in log D); its minimum is N_opt(C); then N_opt = k_N C^a and
              D_opt = k_D C^b.
  chinchilla  Chinchilla Approach 3 as Besiroglu et al. (2024) corrected it:
              L(N, D) = E + A / N^alpha + B / D^beta with
              log L_hat = LSE(a - alpha log N, b - beta log D, e), the SUM over runs of the Huber
              loss (delta 1e-3) of log L_hat - log L, L-BFGS from every point of a 4,500-point grid,
              the best kept. A mean instead of the sum makes L-BFGS stop early.

Runs are resampled with replacement for bootstrap intervals (percentiles over the refits).
"""
import argparse
import csv
import dataclasses
import itertools
import json
import math
import os

import numpy as np
import scipy.optimize

from gptjax.cli import fail, reported
from gptjax.errors import UserError

LAWS = ('kaplan_n', 'kaplan_d', 'kaplan_c', 'isoflop', 'chinchilla')
HUBER_DELTA = 1e-3
# Approach 3's starting points (Hoffmann et al. 2022, app. D.2): every (a, b, e, alpha, beta) here.
CHINCHILLA_GRID = {'a': np.arange(0, 26, 5.0), 'b': np.arange(0, 26, 5.0),
                   'e': np.arange(-1, 1.01, 0.5), 'alpha': np.arange(0, 2.01, 0.5),
                   'beta': np.arange(0, 2.01, 0.5)}
# Bootstrap refits start from the full fit and from this coarse grid (2^5 points), not the full one.
BOOTSTRAP_GRID = {'a': [5.0, 20.0], 'b': [5.0, 20.0], 'e': [-0.5, 0.5], 'alpha': [0.5, 1.5],
                  'beta': [0.5, 1.5]}
# Runs whose C lie within this factor of the smallest C of their group form one compute budget.
BUDGET_SPREAD = 1.5
CI_LEVEL = 0.95


def _exp(x: float) -> float:
  """e^x, inf rather than OverflowError for a degenerate fit (a flat law puts x_c at infinity)."""
  with np.errstate(over='ignore'):
    return float(np.exp(x))


# ---------------------------------------------------------------------------------------------
# Input


@dataclasses.dataclass(frozen=True)
class Observations:
  """One entry per run; a quantity the input does not give (or imply) is None."""
  names: tuple[str, ...]
  loss: np.ndarray
  n: np.ndarray | None = None  # parameters
  d: np.ndarray | None = None  # training tokens
  c: np.ndarray | None = None  # training FLOPs
  c_convention: str = ''  # how C was counted

  def __len__(self) -> int:
    return len(self.loss)

  def take(self, index) -> 'Observations':
    pick = lambda a: None if a is None else a[index]
    names = tuple(np.asarray(self.names, dtype=object)[index])
    return dataclasses.replace(self, names=names, loss=self.loss[index], n=pick(self.n),
                               d=pick(self.d), c=pick(self.c))


def read_rows(path: str) -> list[dict]:
  """The rows of a JSONL or CSV file, or of DIR/results.jsonl for a sweep's root directory. Rows
  with a `name` seen before replace the earlier row (a rerun of the same point)."""
  if os.path.isdir(path):
    path = os.path.join(path, 'results.jsonl')
  if not os.path.isfile(path):
    raise UserError(f'no results file at {path}')
  try:
    with open(path, newline='') as f:
      if path.endswith('.csv'):
        rows = list(csv.DictReader(f))
      elif path.endswith(('.jsonl', '.json')):
        rows = [json.loads(line) for line in f if line.strip()]
      else:
        raise UserError(f'{path}: give a .jsonl or .csv file (or a sweep directory)')
  except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f'cannot read {path}: {e}') from None
  if not all(isinstance(row, dict) for row in rows):
    raise UserError(f'{path}: every line must be a JSON object')
  by_name = {}
  for i, row in enumerate(rows):
    by_name[row.get('name', i)] = row
  return list(by_name.values())


def observations(rows: list[dict], n_col: str = 'N', d_col: str = 'D', c_col: str = 'C',
                 loss_col: str = 'eval_loss', source: str = 'the input',
                 named: dict[str, str] | None = None) -> Observations:
  """The runs' N, D, C and loss from `rows`. A missing D is C / (6N); a missing C is 6ND; a
  column in `named` ({flag: column}, the ones a user asked for by name) must be there."""
  if not rows:
    raise UserError(f'{source} has no runs')
  columns = {k for row in rows for k in row}
  for flag, col in (named or {}).items():
    if col not in columns:
      raise UserError(f'{source} has no column {col!r} ({flag}); its columns: '
                      f'{", ".join(sorted(columns))}')
  names = tuple(str(row.get('name', f'row {i + 1}')) for i, row in enumerate(rows))

  def column(col: str, flag: str) -> np.ndarray | None:
    present = [col in row and row[col] not in ('', None) for row in rows]
    if not any(present):
      return None
    if not all(present):
      raise UserError(f'{source}: {names[present.index(False)]} has no {col} ({flag})')
    values = []
    for name, row in zip(names, rows):
      try:
        value = float(row[col])
      except (TypeError, ValueError):
        raise UserError(f'{source}: {name}: {col}={row[col]!r} is not a number') from None
      if not (math.isfinite(value) and value > 0):
        raise UserError(f'{source}: {name}: {col}={value} must be a positive number')
      values.append(value)
    return np.array(values)

  loss = column(loss_col, '--loss_col')
  if loss is None:
    raise UserError(f'{source} has no column {loss_col!r} (--loss_col); its columns: '
                    f'{", ".join(sorted(columns))}')
  n, d, c = column(n_col, '--n_col'), column(d_col, '--d_col'), column(c_col, '--c_col')
  convention = ''
  if c is not None:
    conventions = {row.get('C_convention') for row in rows}
    if len(conventions) > 1:
      raise UserError(f'{source} mixes compute conventions: {sorted(map(str, conventions))}')
    convention = conventions.pop() or f'as given in column {c_col}'
  if d is None and c is not None and n is not None:
    d = c / (6 * n)
  if c is None and n is not None and d is not None:
    c, convention = 6 * n * d, '6ND (computed from N and D)'
  return Observations(names, loss, n, d, c, convention)


def _require(obs: Observations, law: str, irreducible: bool = False) -> None:
  """Raises UserError if `obs` lacks what `law` needs or has fewer runs than it has parameters."""
  needs = {'kaplan_n': ('n',), 'kaplan_d': ('d',), 'kaplan_c': ('c',), 'isoflop': ('n', 'c'),
           'chinchilla': ('n', 'd')}[law]
  flags = {'n': '--n_col', 'd': '--d_col', 'c': '--c_col (or N and D)'}
  for quantity in needs:
    if getattr(obs, quantity) is None:
      raise UserError(f'{law} needs {quantity.upper()}: the input has no such column '
                      f'({flags[quantity]})')
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
    result = scipy.optimize.least_squares(residuals, start,
                                          bounds=([-np.inf, 0, 0], [np.inf, np.inf, ceiling]))
    if best is None or result.cost < best.cost:
      best = result
  log_x_c, alpha, e = best.x
  return PowerLaw(x_c=_exp(log_x_c), alpha=alpha, E=e, irreducible=True)


def pareto_frontier(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
  """Indices of the points no cheaper point beats, by increasing compute: Kaplan et al.'s
  L(C_min), the envelope of training curves."""
  frontier, best = [], math.inf
  for i in np.argsort(compute, kind='stable'):
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
  inside: bool  # whether N_opt lies within the sizes trained


@dataclasses.dataclass(frozen=True)
class IsoflopFit:
  """N_opt(C) = n_coefficient C^a and D_opt(C) = d_coefficient C^b over the usable budgets."""
  budgets: tuple[IsoflopBudget, ...]
  a: float
  n_coefficient: float
  b: float
  d_coefficient: float
  skipped: tuple[str, ...]  # budgets left out, with why

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


def _parabola_minimum(log_x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, float] | None:
  """(coefficients, argmin in log x) of the least-squares parabola, or None if it opens downward."""
  coefficients = np.polyfit(log_x, loss, 2)
  if coefficients[0] <= 0:
    return None
  return coefficients, -coefficients[1] / (2 * coefficients[0])


def fit_isoflop(obs: Observations) -> IsoflopFit:
  """Approach 2: a parabola per budget with at least 3 distinct sizes, then N_opt and D_opt as
  power laws of C (a straight line in log-log through the budgets' minima)."""
  _require(obs, 'isoflop')
  budgets, skipped = [], []
  for index in group_by_compute(obs.c):
    compute = float(np.exp(np.log(obs.c[index]).mean()))
    if len(set(obs.n[index])) < 3:
      skipped.append(f'C={compute:.3g}: {len(set(obs.n[index]))} model size(s), a parabola needs 3')
      continue
    in_n = _parabola_minimum(np.log(obs.n[index]), obs.loss[index])
    in_d = _parabola_minimum(np.log(obs.d[index]), obs.loss[index])
    if in_n is None or in_d is None:
      skipped.append(f'C={compute:.3g}: the loss has no minimum (the parabola opens downward)')
      continue
    (parabola, log_n_opt), (_, log_d_opt) = in_n, in_d
    budgets.append(IsoflopBudget(
        compute=compute, index=index, parabola=parabola, n_opt=_exp(log_n_opt),
        d_opt=_exp(log_d_opt), loss_opt=float(np.polyval(parabola, log_n_opt)),
        inside=bool(obs.n[index].min() <= _exp(log_n_opt) <= obs.n[index].max())))
  if len(budgets) < 2:
    raise UserError(f'isoflop needs 2 compute budgets with 3 or more model sizes each; found '
                    f'{len(budgets)} ({"; ".join(skipped) or "no budgets"})')
  log_c = np.log([b.compute for b in budgets])
  a, log_kn = np.polyfit(log_c, np.log([b.n_opt for b in budgets]), 1)
  b, log_kd = np.polyfit(log_c, np.log([b.d_opt for b in budgets]), 1)
  return IsoflopFit(tuple(budgets), a=a, n_coefficient=_exp(log_kn), b=b,
                    d_coefficient=_exp(log_kd), skipped=tuple(skipped))


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
    return cls(E=_exp(e), A=_exp(a), B=_exp(b), alpha=alpha, beta=beta,
               objective=objective)

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
    return self.G * c6 ** self.a, c6 ** self.b / self.G


def chinchilla_objective(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                         delta: float = HUBER_DELTA, reduce: str = 'sum'):
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
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    terms = np.stack(np.broadcast_arrays(a - alpha * ln, b - beta * ld, e))  # (3, K, runs)
    top = terms.max(0)
    weights = np.exp(terms - top)
    total = weights.sum(0)
    weights /= total  # softmax: d LSE / d term
    residual = top + np.log(total) - ll
    small = np.abs(residual) <= delta
    huber = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))
    slope = np.clip(residual, -delta, delta) * weights  # (3, K, runs)
    grad = np.stack([slope[0].sum(1), slope[1].sum(1), slope[2].sum(1),
                     -(slope[0] * ln).sum(1), -(slope[1] * ld).sum(1)], axis=1)
    return huber.sum(1) * scale, grad * scale

  return value_and_grad


def grid_starts(grid: dict[str, list[float]] = CHINCHILLA_GRID) -> np.ndarray:
  """Every combination of the grid's values, as rows (a, b, e, alpha, beta)."""
  return np.array(list(itertools.product(*(grid[k] for k in ('a', 'b', 'e', 'alpha', 'beta')))))


def batched_lbfgs(value_and_grad, starts: np.ndarray, memory: int = 10, max_iter: int = 1000,
                  gtol: float = 1e-5, ftol: float = 2.220446049250313e-09):
  """L-BFGS from every row of `starts` at once: the rows are independent problems that share each
  vectorised evaluation. Two-loop recursion and a backtracking (Armijo) line search; a row stops
  by scipy's L-BFGS-B rules: its largest gradient entry is at most gtol, or a step lowered its
  objective by at most ftol relative to max(|f|, 1). Returns (x, f) of every row."""
  x = starts.astype(float).copy()
  k, dim = x.shape
  rows = np.arange(k)
  f, g = value_and_grad(x, rows)
  gamma = 1 / np.maximum(np.linalg.norm(g, axis=1), 1e-12)  # the first step moves x by 1
  history = []  # (s, y, rho) of the last `memory` steps, each (k, dim), (k, dim), (k,)
  active = np.abs(g).max(1) > gtol
  for _ in range(max_iter):
    idx = np.flatnonzero(active)
    if not len(idx):
      break
    q = g[idx].copy()
    alphas = []
    for s, y, rho in reversed(history):
      alpha = rho[idx] * (s[idx] * q).sum(1)
      q -= alpha[:, None] * y[idx]
      alphas.append(alpha)
    r = gamma[idx, None] * q
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
      r += (alpha - rho[idx] * (y[idx] * r).sum(1))[:, None] * s[idx]
    direction = -r
    slope = (direction * g[idx]).sum(1)
    uphill = slope >= 0  # not a descent direction: fall back to the gradient
    direction[uphill] = -g[idx][uphill]
    slope[uphill] = -(g[idx][uphill] ** 2).sum(1)
    step = np.ones(len(idx))
    new_x, new_f, new_g = x[idx].copy(), f[idx].copy(), g[idx].copy()
    pending = np.ones(len(idx), bool)
    for _ in range(40):
      p = np.flatnonzero(pending)
      trial = x[idx[p]] + step[p, None] * direction[p]
      trial_f, trial_g = value_and_grad(trial, idx[p])
      ok = np.isfinite(trial_f) & (trial_f <= f[idx[p]] + 1e-4 * step[p] * slope[p])
      new_x[p[ok]], new_f[p[ok]], new_g[p[ok]] = trial[ok], trial_f[ok], trial_g[ok]
      pending[p[ok]] = False
      if not pending.any():
        break
      step[pending] *= 0.5
    s, y = new_x - x[idx], new_g - g[idx]
    sy = (s * y).sum(1)
    curved = ~pending & (sy > 1e-10)  # pairs that keep the inverse Hessian positive definite
    full_s, full_y, full_rho = np.zeros((k, dim)), np.zeros((k, dim)), np.zeros(k)
    full_s[idx[curved]], full_y[idx[curved]] = s[curved], y[curved]
    full_rho[idx[curved]] = 1 / sy[curved]
    gamma[idx[curved]] = sy[curved] / (y[curved] ** 2).sum(1)
    history = (history + [(full_s, full_y, full_rho)])[-memory:]
    decrease = (f[idx] - new_f) / np.maximum(np.maximum(np.abs(f[idx]), np.abs(new_f)), 1)
    x[idx], f[idx], g[idx] = new_x, new_f, new_g
    active[idx] = ~pending & (decrease > ftol) & (np.abs(new_g).max(1) > gtol)
  return x, f


def fit_chinchilla(n: np.ndarray, d: np.ndarray, loss: np.ndarray, starts: np.ndarray | None = None,
                   delta: float = HUBER_DELTA, reduce: str = 'sum') -> ChinchillaLaw:
  """Approach 3 with Besiroglu et al.'s corrections: L-BFGS from every start (by default the
  4,500-point CHINCHILLA_GRID, all at once with batched_lbfgs), then scipy's L-BFGS-B from the best
  end point to finish it by the same rules."""
  objective = chinchilla_objective(np.log(n)[None], np.log(d)[None], np.log(loss)[None], delta,
                                   reduce)
  starts = grid_starts() if starts is None else np.atleast_2d(starts)
  x, f = batched_lbfgs(objective, starts)
  best = x[np.nanargmin(f)]
  single = lambda theta: tuple(v[0] for v in objective(theta[None], np.zeros(1, int)))
  result = scipy.optimize.minimize(single, best, jac=True, method='L-BFGS-B')
  if result.fun <= np.nanmin(f):
    best = result.x
  return ChinchillaLaw.from_theta(best, objective=float(single(best)[0]))


# ---------------------------------------------------------------------------------------------
# Any law: fit, summary, bootstrap, hold-out


def fit(obs: Observations, law: str, irreducible: bool = False):
  """The fitted law: a PowerLaw (kaplan_*), an IsoflopFit or a ChinchillaLaw."""
  _require(obs, law, irreducible)
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
    return {'E': fitted.E, 'A': fitted.A, 'B': fitted.B, 'alpha': fitted.alpha, 'beta': fitted.beta,
            'a': fitted.a, 'b': fitted.b, 'G': fitted.G}
  if law == 'isoflop':
    return {'a': fitted.a, 'b': fitted.b, 'N_opt_coefficient': fitted.n_coefficient,
            'D_opt_coefficient': fitted.d_coefficient}
  x = law[-1].upper()
  numbers = {f'{x}_c': fitted.x_c, f'alpha_{x}': fitted.alpha}
  if fitted.irreducible:
    numbers['E'] = fitted.E
  return numbers


def bootstrap(obs: Observations, law: str, fitted, k: int, seed: int = 0,
              irreducible: bool = False) -> tuple[dict[str, list[float]], int]:
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
  intervals = {key: [float(np.percentile([s[key] for s in numbers], tail)),
                     float(np.percentile([s[key] for s in numbers], 100 - tail))]
               for key in summary(law, fitted)} if numbers else {}
  return intervals, k - len(numbers)


def _bootstrap_chinchilla(obs: Observations, fitted: ChinchillaLaw,
                          samples: np.ndarray) -> list[ChinchillaLaw]:
  k = len(samples)
  objective = chinchilla_objective(np.log(obs.n)[samples], np.log(obs.d)[samples],
                                   np.log(obs.loss)[samples])
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


def holdout(obs: Observations, law: str, hold_out: str = 'largest',
            irreducible: bool = False) -> list[dict]:
  """Fits `law` to all runs but the held-out ones and predicts those: one dict per held-out run."""
  if law == 'isoflop':
    raise UserError('isoflop predicts no loss for a run; use --law chinchilla or a kaplan law')
  if obs.c is None:
    raise UserError('the hold-out test picks runs by compute: the input needs C, or N and D')
  mask = held_out(obs.c, hold_out)
  rest = obs.take(~mask)
  try:
    _require(rest, law, irreducible)
  except UserError as e:
    raise UserError(f'after holding out {mask.sum()} run(s): {e}') from None
  fitted = fit(rest, law, irreducible)
  test = obs.take(mask)
  predicted = predict(law, fitted, test)
  quantity = lambda a, i: None if a is None else float(a[i])
  return [{'name': test.names[i], 'N': quantity(test.n, i), 'D': quantity(test.d, i),
           'C': float(test.c[i]), 'loss': float(test.loss[i]), 'predicted': float(predicted[i]),
           'relative_error': float((predicted[i] - test.loss[i]) / test.loss[i])}
          for i in range(len(test))]


# ---------------------------------------------------------------------------------------------
# Text output


def format_fit(law: str, fitted, obs: Observations, intervals: dict[str, list[float]],
               k: int, failed: int, loss_col: str, unit: str = 'runs') -> str:
  """A readable table of a fit, its confidence intervals and (for isoflop and chinchilla) the
  compute-optimal allocation."""
  formula = {'kaplan_n': 'L(N) = (N_c / N)^alpha_N', 'kaplan_d': 'L(D) = (D_c / D)^alpha_D',
             'kaplan_c': 'L(C) = (C_c / C)^alpha_C', 'isoflop': 'N_opt = k_N C^a, D_opt = k_D C^b',
             'chinchilla': 'L(N, D) = E + A / N^alpha + B / D^beta'}[law]
  if law.startswith('kaplan') and fitted.irreducible:
    formula = formula.replace('= (', '= E + (')
  lines = [f'{law}: {formula}', f'  {len(obs)} {unit}; loss column {loss_col}'
           + (f'; C: {obs.c_convention}' if obs.c_convention else '')]
  ci_head = f'{CI_LEVEL:.0%} CI ({k - failed} bootstrap fits)' if intervals else ''
  lines.append(f'  {"parameter":<18} {"value":>12}   {ci_head}')
  for key, value in summary(law, fitted).items():
    ci = intervals.get(key)
    interval = f'[{_number(ci[0])}, {_number(ci[1])}]' if ci else ''
    lines.append(f'  {key:<18} {_number(value):>12}   {interval}')
  if law == 'isoflop':
    lines.append(f'  {"budget C":>12} {"runs":>5} {"N_opt":>12} {"D_opt":>12} {"D/N":>8} '
                 f'{"L_opt":>8}')
    for b in fitted.budgets:
      lines.append(f'  {b.compute:>12.4g} {len(b.index):>5} {b.n_opt:>12.4g} {b.d_opt:>12.4g} '
                   f'{b.d_opt / b.n_opt:>8.3g} {b.loss_opt:>8.4f}'
                   + ('' if b.inside else '   (minimum outside the sizes trained)'))
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


def fit_json(law: str, fitted, obs: Observations, intervals: dict[str, list[float]], k: int,
             failed: int, loss_col: str) -> dict:
  result = {'law': law, **summary(law, fitted), 'runs': len(obs), 'loss_col': loss_col,
            'C_convention': obs.c_convention, 'bootstrap': k - failed, 'ci95': intervals}
  if law == 'chinchilla':
    result['objective'] = fitted.objective
  if law == 'isoflop':
    result['budgets'] = [{'C': b.compute, 'runs': len(b.index), 'N_opt': b.n_opt, 'D_opt': b.d_opt,
                          'loss_opt': b.loss_opt, 'inside': b.inside} for b in fitted.budgets]
  return result


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # argparse's usage + message, as the one error line
    fail(f'{message} (see {self.prog} --help)', status=2)


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog='python -m gptjax.scaling', description=__doc__.split('\n\n')[0])
  commands = parser.add_subparsers(dest='command', required=True, metavar='{fit,report,holdout}')

  def add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument('--n_col', help='column of parameters N (default N: non-embedding)')
    p.add_argument('--d_col', help='column of training tokens D (default D; C / (6N) if absent)')
    p.add_argument('--c_col', help='column of training FLOPs C (default C; 6ND if absent)')
    p.add_argument('--loss_col', help='column of the loss (default eval_loss)')
    p.add_argument('--irreducible', action='store_true',
                   help='kaplan laws: fit L = E + (x_c/x)^alpha')
    p.add_argument('--json', action='store_true', help='print one JSON object instead of a table')

  fit_cmd = commands.add_parser('fit', help='fit one law to a results file')
  fit_cmd.add_argument('input', help="a sweep's results.jsonl (or its directory), or a CSV/JSONL")
  fit_cmd.add_argument('--law', choices=LAWS, required=True)
  add_columns(fit_cmd)
  fit_cmd.add_argument('--bootstrap', type=_non_negative, default=0, metavar='K',
                       help='refit K resamples of the runs for confidence intervals')
  fit_cmd.add_argument('--seed', type=int, default=0, help='seed of the bootstrap resamples')

  report = commands.add_parser('report', help='plots and report.md of a sweep')
  report.add_argument('root', help='the sweep directory (results.jsonl and one workdir per run)')
  report.add_argument('--out', default='', help='where to write (default: the sweep directory)')
  report.add_argument('--bootstrap', type=_non_negative, default=100, metavar='K')
  report.add_argument('--seed', type=int, default=0)

  hold = commands.add_parser('holdout', help='fit all but the largest-compute runs, predict those')
  hold.add_argument('input', help="a sweep's results.jsonl (or its directory), or a CSV/JSONL")
  hold.add_argument('--law', choices=[law for law in LAWS if law != 'isoflop'],
                    default='chinchilla')
  hold.add_argument('--hold_out', default='largest',
                    help="'largest' (the largest compute budget, the default) or a number of runs")
  add_columns(hold)
  for command in (fit_cmd, report, hold):
    command.add_argument('--debug', action='store_true',
                         help='show the traceback behind an error line')
  return parser


def _non_negative(text: str) -> int:
  if not text.isdigit():
    raise argparse.ArgumentTypeError(f'{text!r} is not a whole number >= 0')
  return int(text)


def main(argv: list[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  with reported(debug=args.debug):
    if args.command == 'report':
      from gptjax.scaling import (
        report,  # pylint: disable=import-outside-toplevel  # matplotlib
      )
      path = report.write_report(args.root, args.out or args.root, args.bootstrap, args.seed)
      print(f'wrote {path}')
      return
    named = {f'--{k}': getattr(args, k) for k in ('n_col', 'd_col', 'c_col', 'loss_col')
             if getattr(args, k) is not None}
    args.loss_col = args.loss_col or 'eval_loss'
    obs = observations(read_rows(args.input), args.n_col or 'N', args.d_col or 'D',
                       args.c_col or 'C', args.loss_col, source=args.input, named=named)
    if args.command == 'fit':
      fitted = fit(obs, args.law, args.irreducible)
      intervals, failed = ({}, 0)
      if args.bootstrap:
        intervals, failed = bootstrap(obs, args.law, fitted, args.bootstrap, args.seed,
                                      args.irreducible)
      describe = fit_json if args.json else format_fit
      result = describe(args.law, fitted, obs, intervals, args.bootstrap, failed, args.loss_col)
      print(json.dumps(result) if args.json else result)
      return
    predictions = holdout(obs, args.law, args.hold_out, args.irreducible)
    mean_error = float(np.mean([abs(p['relative_error']) for p in predictions]))
    if args.json:
      print(json.dumps({'law': args.law, 'hold_out': args.hold_out, 'runs': predictions,
                        'mean_abs_relative_error': mean_error}))
      return
    print(f'{args.law} fitted to {len(obs) - len(predictions)} runs, predicting the '
          f'{len(predictions)} held out ({args.hold_out}):')
    print(f'  {"run":<24} {"C":>10} {"loss":>8} {"predicted":>10} {"error":>8}')
    for p in predictions:
      print(f'  {p["name"]:<24} {p["C"]:>10.4g} {p["loss"]:>8.4f} {p["predicted"]:>10.4f} '
            f'{p["relative_error"]:>+8.2%}')
    print(f'  mean |relative error| {mean_error:.2%}')
