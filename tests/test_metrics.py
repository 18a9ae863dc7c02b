"""metrics.jsonl (gptjax/training/metrics.py): the later line of a step wins, and half a line left
by a run killed mid-write neither breaks a reader nor swallows the next run's first line; the
TensorBoard event files read back in TensorBoard, and writing them imports no torch."""

import math
import subprocess
import sys

import pytest

from gptjax.training.metrics import MetricsWriter, read_metrics


def test_a_half_written_last_line_is_skipped_and_the_next_run_starts_a_new_line(tmp_path, capsys):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "train_loss": 3.0}\n{"step": 2, "train_lo')  # killed mid-write
  assert read_metrics(str(tmp_path)) == [{'step': 1, 'train_loss': 3.0}]
  assert 'line 2: not a whole JSON line' in capsys.readouterr().err
  writer = MetricsWriter(str(tmp_path))
  writer.write(2, {'train_loss': 2.5})
  writer.write(1, {'train_loss': 2.9})  # a resumed run logs step 1 again: the later line wins
  writer.close()
  assert read_metrics(str(tmp_path)) == [
    {'step': 1, 'train_loss': 2.9},
    {'step': 2, 'train_loss': 2.5},
  ]


def test_the_tensorboard_event_file_reads_back_in_tensorboard(tmp_path):
  event_accumulator = pytest.importorskip(
    'tensorboard.backend.event_processing.event_accumulator',
    reason='the tensorboard viewer reads the event file (pip install tensorboard)',
  )
  writer = MetricsWriter(str(tmp_path))
  writer.write(1, {'train_loss': 3.5, 'learning_rate': 1e-4})
  writer.write(2, {'train_loss': 3.25, 'grad_norm': float('inf')})
  writer.write(300, {'eval_loss': 2.75, 'big': 1e300})  # past float32: inf, as a cast would
  writer.close()
  writer = MetricsWriter(str(tmp_path))  # a resumed run: its own file in the same directory
  writer.write(301, {'eval_loss': 2.5})
  writer.close()
  reader = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  reader.Reload()
  scalars = {
    tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()['scalars']
  }
  assert scalars == {
    'train_loss': [(1, 3.5), (2, 3.25)],
    'learning_rate': [(1, pytest.approx(1e-4))],  # float32
    'grad_norm': [(2, math.inf)],
    'eval_loss': [(300, 2.75), (301, 2.5)],
    'big': [(300, math.inf)],
  }


def test_gptjax_commands_import_no_torch():
  """tensorboardX imports torch where it is installed (seconds at start); gptjax writes its
  TensorBoard events itself, so no command pays for torch unless it converts checkpoints."""
  code = (
    'import sys, gptjax.training.trainer, gptjax.training.stacked, gptjax.downstream.finetuning, '
    'gptjax.main; '
    "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('tensorboardX')))"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'
