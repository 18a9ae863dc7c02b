"""Which runs a law is fitted to, and why the others are left out: the one rule that
python -m gptjax.scaling fit, holdout and report (report.supported_laws) all follow.

A run is left out, with the first of these reasons that applies to it:

  every law   it diverged (a sweep row with `diverged`), or it has no value in the loss column
  isoflop,    it repeated its data (D > unique_tokens): Hoffmann et al. fit single-epoch runs
  chinchilla
  kaplan_n    it is not in the model-size series: the most runs that share D and unique_tokens,
              among the groups with 3+ sizes
  kaplan_d    it is not in the data-size series: the most runs that share N and D, among the groups
              with 3+ values of unique_tokens (kaplan_d's D is unique_tokens)
  isoflop     it is in the model-size series (one D for every size: its C is no budget the sweep
              planned), or in a compute budget (laws.group_by_compute) of fewer than 3 model
              sizes

A criterion applies only where its columns exist: the series and repeated-data rules need
unique_tokens, which a sweep's results.jsonl has, so a CSV of N, D and loss keeps every run with a
loss. The runs kept are sorted by C, N, D, loss and name, so that a fit and its bootstrap do not
depend on the order of the rows in the file. A sweep's rows also set the columns a law reads by
default (default_columns): Kaplan's laws the best evaluation (early stopping), kaplan_d
unique_tokens as its D, the others the final eval_loss.
"""

import dataclasses
import math

import numpy as np

from gptjax.errors import UserError
from gptjax.scaling import laws
from gptjax.scaling.observations import Observations, observations

DIVERGED = 'diverged (a non-finite step retired it)'
REPEATED = (
  'repeated its data (D > unique_tokens), and Hoffmann et al. fit Approaches 2 and 3 to '
  'single-epoch runs'
)
NOT_SIZE_SERIES = 'not in the model-size series (the most runs at one D and unique_tokens)'
NOT_DATA_SERIES = 'not in the data-size series (the most runs at one N and D, 3+ unique_tokens)'
NO_SIZE_SERIES = 'in no model-size series (no 3 sizes share one D and unique_tokens)'
NO_DATA_SERIES = 'in no data-size series (no 3 values of unique_tokens share one N and D)'
IN_SIZE_SERIES = (
  'in the model-size series (one D for every size, so its C is no budget the sweep planned)'
)


class NothingLeft(UserError):
  """Every run of the input was left out."""


@dataclasses.dataclass(frozen=True)
class Selection:
  """The runs `law` is fitted to (rows, and obs made from them) and those left out, with why."""

  law: str
  rows: tuple[dict, ...]  # the rows kept, the same objects as the input's, sorted
  obs: Observations
  dropped: tuple[tuple[str, str], ...]  # (run, why), in the input's order
  total: int  # rows in the input
  loss_col: str
  d_col: str

  def by_reason(self) -> dict[str, list[str]]:
    """{why: the runs left out for it}, in the order the reasons first occur."""
    return _by_reason(self.dropped)

  def summary(self) -> str:
    """One line: 'chinchilla on 16 of 19 runs (left out: 3 repeated its data ...)'."""
    text = f'{self.law} on {len(self.rows)} of {self.total} runs'
    if self.dropped:
      text += f' (left out: {_reasons(self.dropped)})'
    return text

  def as_json(self) -> list[dict]:
    return [{'name': name, 'why': why} for name, why in self.dropped]


def _has(rows: list[dict], column: str) -> bool:
  return any(row.get(column) not in (None, '') for row in rows)


def _diverged(row: dict) -> bool:
  """Whether the row says its run diverged (a sweep's `diverged`; a CSV's false or 0 is not)."""
  value = row.get('diverged')
  return value not in (None, '', False, 0) and str(value).lower() not in ('false', '0', 'no')


def _number(row: dict, column: str) -> float | None:
  try:
    value = float(row[column])
  except (KeyError, TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def default_columns(rows: list[dict], law: str) -> tuple[str, str]:
  """(loss column, D column) that `law` reads from `rows` unless told otherwise: on a sweep's rows
  (they have unique_tokens and best_eval_loss), kaplan_n and kaplan_d the best evaluation, as
  Kaplan et al. fit early-stopped losses, and kaplan_d unique_tokens as its D; otherwise eval_loss,
  the loss at the end of the run's schedule (Hoffmann et al.), and D."""
  sweep = _has(rows, 'unique_tokens') and _has(rows, 'best_eval_loss')
  loss_col = 'best_eval_loss' if sweep and law in ('kaplan_n', 'kaplan_d') else 'eval_loss'
  d_col = 'unique_tokens' if sweep and law == 'kaplan_d' else 'D'
  return loss_col, d_col


def _series(rows: list[dict], key: tuple[str, str], varied: str) -> list[dict]:
  """The most rows sharing the values of `key`, among the groups with 3+ distinct `varied`;
  [] if no group has 3. Ties go to the group with the larger key, whatever the rows' order."""
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    values = tuple(_number(row, k) for k in key)
    if None not in values and _number(row, varied) is not None:
      groups.setdefault(values, []).append(row)
  wide = [(len(g), k, g) for k, g in groups.items() if len({_number(r, varied) for r in g}) >= 3]
  return max(wide, key=lambda t: t[:2])[2] if wide else []


def select(
  rows: list[dict],
  law: str,
  loss_col: str | None = None,
  n_col: str = 'N',
  d_col: str | None = None,
  c_col: str = 'C',
  source: str = 'the input',
  named: dict[str, str] | None = None,
) -> Selection:
  """The rows `law` is fitted to and those it leaves out, by the rule of the module docstring;
  loss_col and d_col default to default_columns. Raises NothingLeft (a UserError) if no run is
  left, and observations' UserError for a value that is not a positive number."""
  if law not in laws.LAWS:
    raise UserError(f'no law {law!r}; the laws: {", ".join(laws.LAWS)}')
  default_loss, default_d = default_columns(rows, law)
  loss_col, d_col = loss_col or default_loss, d_col or default_d
  names = [str(row.get('name', f'row {i + 1}')) for i, row in enumerate(rows)]
  why: dict[int, str] = {}  # row index -> why it is left out
  has_loss = any(loss_col in row for row in rows)  # else observations names the missing column
  for i, row in enumerate(rows):
    if _diverged(row):
      why[i] = DIVERGED
    elif has_loss and row.get(loss_col) in (None, ''):
      why[i] = f'no {loss_col} (the run did not finish)'
    elif law in ('isoflop', 'chinchilla'):
      d, unique = _number(row, d_col), _number(row, 'unique_tokens')
      if d is not None and unique and d > unique:
        why[i] = REPEATED
  finished = [i for i in range(len(rows)) if i not in why]
  if _has(rows, 'unique_tokens'):
    sizes = {id(r) for r in _series([rows[i] for i in finished], ('D', 'unique_tokens'), n_col)}
    if law == 'kaplan_n':
      reason = NOT_SIZE_SERIES if sizes else NO_SIZE_SERIES
      why.update({i: reason for i in finished if id(rows[i]) not in sizes})
    elif law == 'kaplan_d':
      data = {id(r) for r in _series([rows[i] for i in finished], (n_col, 'D'), 'unique_tokens')}
      reason = NOT_DATA_SERIES if data else NO_DATA_SERIES
      why.update({i: reason for i in finished if id(rows[i]) not in data})
    elif law == 'isoflop':
      why.update({i: IN_SIZE_SERIES for i in finished if id(rows[i]) in sizes})

  def make_obs(index: list[int]) -> Observations:
    return observations(
      [rows[i] for i in index],
      n_col,
      d_col,
      c_col,
      loss_col,
      source=source,
      named=named,
      names=tuple(names[i] for i in index),
    )

  kept = [i for i in range(len(rows)) if i not in why]
  if law == 'isoflop' and kept:
    obs = make_obs(kept)
    if obs.n is not None and obs.c is not None:
      for group in laws.group_by_compute(obs.c):
        sizes_here = len(set(obs.n[group]))
        if sizes_here < 3:
          compute = float(np.exp(np.log(obs.c[group]).mean()))
          reason = (
            f'in compute budget C={compute:.3g}, which has {sizes_here} model size(s) (an '
            'isoFLOP parabola needs 3)'
          )
          why.update({kept[j]: reason for j in group})
      kept = [i for i in kept if i not in why]
  dropped = tuple((names[i], why[i]) for i in sorted(why))
  if not kept:
    reasons = _reasons(dropped) or 'the input has no rows'
    raise NothingLeft(f'{source}: no run is left to fit {law} to ({reasons})')
  obs = make_obs(kept)
  quantity = lambda a, j: 0.0 if a is None else float(a[j])
  order = sorted(
    range(len(kept)),
    key=lambda j: (
      quantity(obs.c, j),
      quantity(obs.n, j),
      quantity(obs.d, j),
      float(obs.loss[j]),
      obs.names[j],
    ),
  )
  return Selection(
    law,
    tuple(rows[kept[j]] for j in order),
    obs.take(np.array(order, dtype=int)),
    dropped,
    len(rows),
    loss_col,
    d_col,
  )


def _by_reason(dropped) -> dict[str, list[str]]:
  grouped: dict[str, list[str]] = {}
  for name, why in dropped:
    grouped.setdefault(why, []).append(name)
  return grouped


def _reasons(dropped) -> str:
  """'3 repeated its data ...; 1 diverged ...': how many runs each reason left out."""
  return '; '.join(f'{len(names)} {why}' for why, names in _by_reason(dropped).items())


def supported(rows: list[dict], source: str = 'the input') -> dict[str, Selection]:
  """{law: its Selection} for each law a sweep's rows support (report.py fits these): kaplan_n a
  series of 3+ sizes, kaplan_d one of 3+ data sizes, isoflop 2+ budgets with 3+ sizes each,
  chinchilla 6+ single-epoch runs at 3+ distinct N and 3+ distinct D."""
  found = {}
  for law in ('kaplan_n', 'kaplan_d', 'isoflop', 'chinchilla'):
    try:
      chosen = select(rows, law, source=source)
    except NothingLeft:
      continue
    obs = chosen.obs
    distinct = lambda a: 0 if a is None else len(set(a))
    if law == 'kaplan_n':
      ok = distinct(obs.n) >= 3
    elif law == 'kaplan_d':
      ok = distinct(obs.d) >= 3
    elif law == 'isoflop':
      ok = obs.c is not None and len(laws.group_by_compute(obs.c)) >= 2
    else:
      ok = len(obs) >= 6 and distinct(obs.n) >= 3 and distinct(obs.d) >= 3
    if ok:
      found[law] = chosen
  return found
