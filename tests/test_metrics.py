"""metrics.jsonl (gptjax/training/metrics.py): the later line of a step wins, and half a line left
by a run killed mid-write neither breaks a reader nor swallows the next run's first line."""

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
