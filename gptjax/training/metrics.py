"""Where metrics go: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard event files in
WORKDIR/tensorboard, and the console's progress bar."""

import json
import os
import sys

from tensorboardX import SummaryWriter


class MetricsWriter:
  """Writes from process 0 only; other processes get a writer that does nothing."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      path = os.path.join(workdir, 'metrics.jsonl')
      unfinished = os.path.exists(path) and os.path.getsize(path) and not _ends_a_line(path)
      self._jsonl = open(path, 'a')
      if unfinished:  # a run killed mid-write left half a line: end it, so ours stand alone
        self._jsonl.write('\n')
      self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tensorboard.close()


def read_metrics(workdir: str, last_step: int | None = None) -> list[dict]:
  """WORKDIR/metrics.jsonl (empty if there is none) in step order, up to last_step. A run resumed
  from a checkpoint logs the steps after it again; the later line of a step wins."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  latest = {}
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      try:
        row = json.loads(line)
      except ValueError:  # half a line, written as the run was killed: the resumed run logs again
        print(f'warning: {path}, line {number}: not a whole JSON line; skipped', file=sys.stderr)
        continue
      if not isinstance(row, dict) or not isinstance(row.get('step'), int):
        continue
      if last_step is None or row['step'] <= last_step:
        latest[(row['step'], 'eval_loss' in row)] = row  # train and eval lines share steps
  return [latest[key] for key in sorted(latest)]


def _ends_a_line(path: str) -> bool:
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'
