"""L-BFGS over many independent starting points at once, in NumPy.

Fitting Chinchilla's Approach 3 means minimising one small function from thousands of starts (and,
for a bootstrap, over hundreds of resampled data sets). Running them as the rows of one array makes
each step one vectorised evaluation of the objective instead of thousands of Python calls. The
optimiser knows nothing of scaling laws: it takes any f(x (K, dim), rows (K,)) -> (values (K,),
gradients (K, dim)), where `rows` says which of the K problems each x belongs to.
"""

import numpy as np


def batched_lbfgs(
  value_and_grad,
  starts: np.ndarray,
  memory: int = 10,
  max_iter: int = 1000,
  gtol: float = 1e-5,
  ftol: float = 2.220446049250313e-09,
):
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
