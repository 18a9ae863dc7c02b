"""The runs a scaling law is fitted to: rows read from a sweep's results.jsonl (or any JSONL or
CSV file), and their parameters N, training tokens D, training FLOPs C and loss as arrays.

The columns are named by the caller, so files other than a sweep's can be fitted; a quantity the
file does not give is derived where it can be (D = C / (6N), C = 6ND) and None where it cannot, for
the law that needs it to say so. Every problem with the input is a UserError naming the run and
the column.
"""

import csv
import dataclasses
import math
import os

import numpy as np

from gptjax import fields
from gptjax.data import sources
from gptjax.errors import UserError


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
    return dataclasses.replace(
      self, names=names, loss=self.loss[index], n=pick(self.n), d=pick(self.d), c=pick(self.c)
    )


def read_rows(path: str) -> list[dict]:
  """The rows of a JSONL or CSV file, or of DIR/results.jsonl for a sweep's root directory. Rows
  with a `name` seen before replace the earlier row (a rerun of the same point)."""
  if os.path.isdir(path):
    path = os.path.join(path, 'results.jsonl')
  if not os.path.isfile(path):
    raise UserError(f'no results file at {path}')
  if path.endswith('.csv'):
    rows = _csv_rows(path)
  elif path.endswith(('.jsonl', '.json')):
    rows = [row for _, row in sources.jsonl_objects(sources.utf8_lines(path), path)]
  else:
    raise UserError(f'{path}: give a .jsonl or .csv file (or a sweep directory)')
  if not all(isinstance(row, dict) for row in rows):
    raise UserError(f'{path}: every line must be a JSON object')
  by_name = {}
  for i, row in enumerate(rows):
    if isinstance(row.get('config'), dict):  # a row written before fields moved or were added
      row['config'] = fields.upgrade(row['config'])
    by_name[row.get('name', i)] = row
  return list(by_name.values())


def _csv_rows(path: str) -> list[dict]:
  """The rows of a CSV file with a header line, as dicts; a row of another number of fields than
  the header is a UserError naming its line."""
  reader = csv.reader(sources.utf8_lines(path))
  try:
    header = next(reader, None)
    if not header:
      raise UserError(f'{path}: no header line (the column names)')
    rows = []
    for fields in reader:
      if not fields:  # a blank line
        continue
      if len(fields) != len(header):
        raise UserError(
          f'{path}:{reader.line_num}: {len(fields)} fields where the header has {len(header)} '
          f'({", ".join(header)}); give every row one value per column'
        )
      rows.append(dict(zip(header, fields)))
  except csv.Error as e:
    raise UserError(f'{path}:{reader.line_num}: not valid CSV ({e})') from None
  return rows


def observations(
  rows: list[dict],
  n_col: str = 'N',
  d_col: str = 'D',
  c_col: str = 'C',
  loss_col: str = 'eval_loss',
  source: str = 'the input',
  named: dict[str, str] | None = None,
  names: tuple[str, ...] | None = None,
) -> Observations:
  """The runs' N, D, C and loss from `rows`. A missing D is C / (6N); a missing C is 6ND; a
  column in `named` ({flag: column}, the ones a user asked for by name) must be there. A run is
  named by its `name`, else by `names` (the caller's, for rows picked from a longer file), else
  as 'row i'."""
  if not rows:
    raise UserError(f'{source} has no runs')
  columns = {k for row in rows for k in row}
  for flag, col in (named or {}).items():
    if col not in columns:
      raise UserError(
        f'{source} has no column {col!r} ({flag}); its columns: {", ".join(sorted(columns))}'
      )
  if names is None:
    names = tuple(f'row {i + 1}' for i in range(len(rows)))
  names = tuple(str(row.get('name', name)) for row, name in zip(rows, names, strict=True))

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
    raise UserError(
      f'{source} has no column {loss_col!r} (--loss_col); its columns: {", ".join(sorted(columns))}'
    )
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
