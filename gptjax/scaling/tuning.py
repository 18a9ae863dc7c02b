"""Tuning per scale: expand a sweep into a grid of hyperparameters at every size, find each size's
optimum, keep the tuned frontier (the best run per (N, D)) for the scaling-law fits, and fit the
optimal hyperparameter against N or C as a power law to extrapolate it to a larger run.

Porian et al. (2024) trace much of the Kaplan/Chinchilla disagreement to hyperparameters left
untuned per scale; Li et al. (2025) and Porian et al. fit their laws on the best run per (N, D),
which is what tuned_frontier returns. Two of their rules are here as functions a sweep file can use:
  porian_warmup_steps   warmup for as many tokens as the model has parameters (N tokens), rather
                        than one step count for every size, which is far too long for small models
  beta2_for_batch       AdamW's beta2 at a batch size, holding the second-moment average's
                        half-life fixed in tokens (the smaller the batch, the larger beta2), the
                        adjustment Porian et al. found necessary at small batch sizes
Seed noise: with_seeds repeats runs under other seeds (which stack, gptjax/training/stacked.py),
and seed_noise reports the spread of their final losses, the floor below which a fit's
prediction error means nothing.
"""

import dataclasses
import itertools
import json
import math
from typing import Any

import numpy as np

from gptjax.errors import UserError

Run = tuple[str, dict[str, Any]]


def expand(runs: list[Run], grid: dict[str, dict[str, Any]]) -> list[Run]:
  """Every run of `runs` at every point of `grid`: {field: {name suffix: value}} (e.g.
  {'train.lr': {'lr1e-3': 1e-3, 'lr3e-3': 3e-3}}), several fields as their product; the new runs
  are named f'{name}_{suffix}[_{suffix}...]'."""
  axes = [
    [(field, suffix, value) for suffix, value in values.items()] for field, values in grid.items()
  ]
  if not all(axes):
    raise UserError('every field of a tuning grid needs at least one value')
  expanded = []
  for name, overrides in runs:
    for point in itertools.product(*axes):
      suffix = '_'.join(s for _, s, _ in point)
      expanded.append((f'{name}_{suffix}', {**overrides, **{f: v for f, _, v in point}}))
  return expanded


def with_seeds(runs: list[Run], seeds: int) -> list[Run]:
  """The runs, each also under seeds 1 .. seeds - 1 (named f'{name}_seed{k}'); seed 0 keeps the
  run's name, so adding seeds to a finished sweep retrains nothing."""
  return [
    (name if k == 0 else f'{name}_seed{k}', {**overrides, 'seed': k} if k else overrides)
    for name, overrides in runs
    for k in range(seeds)
  ]


def porian_warmup_steps(n_params: int, tokens_per_step: int) -> int:
  """Warmup over N tokens, N the model's parameters, at least one step: Porian et al.'s (2024)
  replacement for Kaplan et al.'s fixed 3,000 steps as we recall it (the copies of the paper
  searchable here did not show the section: check it before relying on the exact rule)."""
  return max(1, round(n_params / tokens_per_step))


def beta2_for_batch(
  tokens_per_step: int, reference_tokens: int = 524_288, reference_beta2: float = 0.95
) -> float:
  """The beta2 whose averaging half-life, counted in tokens, equals reference_beta2's at
  reference_tokens per step (by default GPT-3-style 0.95 at 0.5M tokens): beta2 =
  reference_beta2 ** (tokens_per_step / reference_tokens)."""
  return reference_beta2 ** (tokens_per_step / reference_tokens)


@dataclasses.dataclass(frozen=True)
class Optimum:
  value: float  # the interpolated optimum of the hyperparameter
  loss: float  # the loss at the best value tried (the mean over its seeds)
  best_run: str  # the run with that loss
  at_edge: bool  # the best point is the grid's smallest or largest value: extend the grid
  points: int  # runs with a finite loss


def optimum(values: list[float], losses: list[float | None], names: list[str]) -> Optimum:
  """The hyperparameter value that minimises loss: the vertex of the parabola in log(value)
  through the best run and its two neighbours; at the grid's edge, the best value itself, flagged.
  Runs without a loss (diverged) count as worse than any with one; runs of one value under
  several seeds count as their mean loss, named by the first of them."""
  by_value: dict[float, list] = {}
  for v, loss, name in sorted(zip(values, losses, names), key=lambda t: t[2]):
    if loss is not None and math.isfinite(loss):
      by_value.setdefault(math.log(v), []).append((loss, name))
  finite = sorted(
    (x, float(np.mean([loss for loss, _ in runs])), runs[0][1]) for x, runs in by_value.items()
  )
  if not finite:
    raise UserError(f'no run of {", ".join(names)} has a finite loss')
  best = min(range(len(finite)), key=lambda i: finite[i][1])
  _, best_loss, best_name = finite[best]
  all_values = sorted(math.log(v) for v in values)
  at_edge = finite[best][0] in (all_values[0], all_values[-1])
  if at_edge or best in (0, len(finite) - 1):  # no neighbour on one side, or only diverged ones
    return Optimum(math.exp(finite[best][0]), best_loss, best_name, at_edge, len(finite))
  x, y = (
    np.array([p[0] for p in finite[best - 1 : best + 2]]),
    [p[1] for p in finite[best - 1 : best + 2]],
  )
  a, b, _ = np.polyfit(x - x[1], y, 2)  # centred: log values are far from 0
  vertex = x[1] + (-b / (2 * a) if a > 0 else 0.0)
  return Optimum(
    math.exp(float(np.clip(vertex, x[0], x[2]))), best_loss, best_name, False, len(finite)
  )


def config_value(row: dict, field: str):
  """A dotted field of a results row's config; None where the config lacks it."""
  node = row['config']
  for part in field.split('.'):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def _without(config: dict, fields: tuple[str, ...]) -> dict:
  """A copy of a row's nested config without the dotted fields."""
  config = json.loads(json.dumps(config))
  for field in fields:
    *parents, leaf = field.split('.')
    node = config
    for part in parents:
      node = node.get(part, {})
    node.pop(leaf, None)
  return config


def curves(rows: list[dict], field: str = 'train.lr') -> list[list[dict]]:
  """The rows in groups whose configs differ only in `field` and the seed: one tuning curve
  each (a model size, and anything else the sweep varied, at every value of the field)."""
  groups: dict[str, list[dict]] = {}
  for row in rows:
    key = json.dumps(_without(row['config'], (field, 'seed')), sort_keys=True)
    groups.setdefault(key, []).append(row)
  return sorted(groups.values(), key=lambda g: (g[0]['N'], g[0]['D'], g[0]['name']))


def tuned_frontier(
  rows: list[dict], field: str = 'train.lr', loss_col: str = 'eval_loss'
) -> tuple[list[dict], list[tuple[list[dict], Optimum]]]:
  """The best row of every (N, D, unique tokens) over the values of `field` its runs tried (and
  whatever else they varied), ranked by loss_col, and each tuning curve with its optimum (and
  at-grid-edge flag). A curve of one run is an untuned point: at_edge True."""
  found = []
  for curve in curves(rows, field):
    found.append(
      (
        curve,
        optimum(
          [config_value(r, field) for r in curve],
          [r.get(loss_col) for r in curve],
          [r['name'] for r in curve],
        ),
      )
    )
  best: dict[tuple, dict] = {}
  for curve, result in found:
    row = next(r for r in curve if r['name'] == result.best_run)
    key = (row['N'], row['D'], row.get('unique_tokens') or 0)  # L(D) varies only the last
    if key not in best or row[loss_col] < best[key][loss_col]:
      best[key] = row
  return [best[key] for key in sorted(best)], found


@dataclasses.dataclass(frozen=True)
class HyperparameterLaw:
  """value = coefficient * x ** exponent, with bootstrap percentile intervals."""

  coefficient: float
  exponent: float
  exponent_interval: tuple[float, float]
  x_name: str

  def predict(self, x: float) -> float:
    return self.coefficient * x**self.exponent


def fit_hyperparameter_law(
  x: list[float], values: list[float], x_name: str = 'N', resamples: int = 1000, seed: int = 0
) -> HyperparameterLaw:
  """A straight line in log-log through (x, optimal value): DeepSeek (2024) fits
  eta_opt = 0.3118 C^-0.125 and B_opt = 0.292 C^0.3271 this way. The exponent's 95% interval
  comes from refitting to the points resampled with replacement."""
  log_x, log_v = np.log(np.asarray(x, float)), np.log(np.asarray(values, float))
  if len(set(log_x)) < 2:
    raise UserError(f'a hyperparameter law needs optima at 2 or more distinct {x_name}')
  slope, intercept = np.polyfit(log_x, log_v, 1)
  rng = np.random.default_rng(seed)
  slopes = []
  for _ in range(resamples):
    pick = rng.integers(0, len(log_x), len(log_x))
    if len(set(log_x[pick])) > 1:
      slopes.append(np.polyfit(log_x[pick], log_v[pick], 1)[0])
  low, high = np.percentile(slopes, [2.5, 97.5]) if slopes else (math.nan, math.nan)
  return HyperparameterLaw(math.exp(intercept), float(slope), (float(low), float(high)), x_name)


def seed_noise(rows: list[dict], loss_col: str = 'eval_loss') -> dict[str, float]:
  """Per run repeated under several seeds (names f'{name}_seed{k}' of with_seeds), the standard
  deviation of its final loss over the seeds (ddof 1); and 'median' over them."""
  groups: dict[str, list[float]] = {}
  for row in rows:
    base = row['name'].split('_seed')[0]
    if row.get(loss_col) is not None:
      groups.setdefault(base, []).append(row[loss_col])
  noise = {
    name: float(np.std(losses, ddof=1)) for name, losses in groups.items() if len(losses) > 1
  }
  if noise:
    noise['median'] = float(np.median(list(noise.values())))
  return noise
