"""Where metrics go: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard event files in
WORKDIR/tensorboard, and the console's progress bar."""

import json
import os

from tensorboardX import SummaryWriter


class MetricsWriter:
  """Writes from process 0 only; other processes get a writer that does nothing."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
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
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if last_step is None or row['step'] <= last_step:
        latest[(row['step'], 'eval_loss' in row)] = row  # train and eval lines share steps
  return [latest[key] for key in sorted(latest)]
