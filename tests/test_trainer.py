import collections
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _text_config(config, corpus_glob, **train_overrides):
  config.data.source, config.data.text_files = 'text_files', corpus_glob
  config.train.log_every = 1
  config.train.update(train_overrides)
  return config


def _logged(workdir: str, key: str) -> dict[int, float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {row['step']: row[key] for row in rows if key in row}


def test_loss_falls_well_below_its_start(tiny_config, corpus_glob, tmp_path):
  config = _text_config(tiny_config, corpus_glob, steps=80)
  metrics = trainer.train_and_evaluate(config, str(tmp_path), show_progress=False)
  losses = _logged(str(tmp_path), 'train_loss')
  assert losses[1] == pytest.approx(np.log(262), rel=0.05)  # uniform over the byte vocabulary
  assert losses[80] < 0.4 * losses[1]
  assert metrics['eval_loss'] < 0.4 * losses[1]
  assert set(_logged(str(tmp_path), 'eval_loss')) == {30, 60, 80}


def test_the_last_evaluation_reads_final_eval_batches_and_gives_a_standard_error(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob, steps=20, eval_every=10)
  config.train.update(eval_batches=1, final_eval_batches=6)
  metrics = trainer.train_and_evaluate(config, str(tmp_path), show_progress=False)
  assert set(_logged(str(tmp_path), 'eval_loss')) == {10, 20}
  assert set(_logged(str(tmp_path), 'eval_loss_se')) == {20}  # one batch has no spread
  run = trainer.Run(config, str(tmp_path))  # the trained state, restored
  try:
    per_batch = [
      float(run.eval_step(run.state.params, batch)['loss'])
      for batch in run.data.eval_batches(6, config.train.global_batch_size)
    ]
  finally:
    run.close()
  assert metrics['eval_loss'] == pytest.approx(np.mean(per_batch), rel=1e-6)
  assert metrics['eval_loss_se'] == pytest.approx(np.std(per_batch, ddof=1) / np.sqrt(6), rel=1e-5)


def test_resuming_from_a_checkpoint_continues_the_same_loss_curve(
  tiny_config, corpus_glob, tmp_path
):
  config = _text_config(tiny_config, corpus_glob, steps=40, checkpoint_every=10)
  config.model.update(embd_dropout=0.1, resid_dropout=0.1)  # the dropout keys must resume too
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  trainer.train_and_evaluate(config, straight, show_progress=False)
  trainer.train_and_evaluate(config, resumed, show_progress=False, stop_at=25)
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints'))) == [
    '10',
    '20',
    '25',
    'fingerprints.json',
  ]
  trainer.train_and_evaluate(config, resumed, show_progress=False)
  expected, got = _logged(straight, 'train_loss'), _logged(resumed, 'train_loss')
  assert sorted(got) == list(range(1, 41))
  np.testing.assert_array_equal([got[s] for s in range(1, 41)], [expected[s] for s in range(1, 41)])


def test_gradient_accumulation_matches_one_big_batch(tiny_config, corpus_glob, tmp_path):
  config = _text_config(tiny_config, corpus_glob, steps=8, warmup_steps=4)
  trainer.train_and_evaluate(config, str(tmp_path / 'one'), show_progress=False)
  config.train.grad_accum_steps = 4
  trainer.train_and_evaluate(config, str(tmp_path / 'four'), show_progress=False)
  one, four = (
    _logged(str(tmp_path / 'one'), 'train_loss'),
    _logged(str(tmp_path / 'four'), 'train_loss'),
  )
  np.testing.assert_allclose(list(four.values()), list(one.values()), rtol=1e-5)


_EIGHT_DEVICE_SCRIPT = """
import os, sys
from gptjax.configs import tiny
from gptjax.training import trainer
import jax
assert jax.device_count() == 8, jax.devices()
for sharding in ('replicate', 'fsdp'):
  config = tiny.get_config()
  config.tokenizer.kind, config.sample.max_new_tokens = 'byte', 0
  config.data.source, config.data.text_files = 'text_files', sys.argv[1]
  config.train.update(steps=12, log_every=1, sharding=sharding, grad_accum_steps=1)
  trainer.train_and_evaluate(config, os.path.join(sys.argv[2], sharding), show_progress=False)
  run = trainer.Run(config, os.path.join(sys.argv[2], sharding))
  kernel = run.state.params['h_0']['mlp']['c_fc']['kernel']  # (32, 128)
  moment = run.state.opt_state[1][0].mu['h_0']['mlp']['c_fc']['kernel']
  for array in (kernel, moment):
    shard_shapes = {shard.data.shape for shard in array.addressable_shards}
    expected = (32, 128 // 8) if sharding == 'fsdp' else (32, 128)
    assert shard_shapes == {expected}, (sharding, shard_shapes)
  run.close()
"""


@pytest.mark.slow
def test_eight_simulated_devices_give_the_losses_of_one(tiny_config, corpus_glob, tmp_path):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'PYTHONPATH': REPO}
  subprocess.run(
    [sys.executable, '-c', _EIGHT_DEVICE_SCRIPT, corpus_glob, str(tmp_path)],
    check=True,
    env=env,
    cwd=REPO,
  )
  config = _text_config(tiny_config, corpus_glob, steps=12)
  trainer.train_and_evaluate(config, str(tmp_path / 'one_device'), show_progress=False)
  one = _logged(str(tmp_path / 'one_device'), 'train_loss')
  for sharding in ('replicate', 'fsdp'):
    eight = _logged(str(tmp_path / sharding), 'train_loss')
    np.testing.assert_allclose([eight[s] for s in one], list(one.values()), rtol=2e-5)
    assert _logged(str(tmp_path / sharding), 'eval_loss')[12] == pytest.approx(
      _logged(str(tmp_path / 'one_device'), 'eval_loss')[12], rel=2e-5
    )


def test_a_step_whose_update_is_not_finite_commits_nothing(tiny_config, corpus_glob, tmp_path):
  # eps 0: Adam divides 0 by 0 for the position rows the 32-token windows never use.
  config = _text_config(tiny_config, corpus_glob, steps=3, eps=0.0, warmup_steps=1)
  with pytest.raises(UserError, match='step 1: the update is not finite'):
    trainer.train_and_evaluate(config, str(tmp_path / 'stop'), show_progress=False)
  config.train.nonfinite = 'skip'
  metrics = trainer.train_and_evaluate(config, str(tmp_path / 'skip'), show_progress=False)
  # Every step divides 0 by 0 again (a skipped step leaves the state as it was), and the model
  # the run evaluates is the initial one, finite.
  assert sum(_logged(str(tmp_path / 'skip'), 'skipped_steps').values()) == 3
  assert np.isfinite(metrics['eval_loss'])


def test_a_run_warns_before_compiling_when_the_estimate_exceeds_the_device(
  tiny_config, corpus_glob, tmp_path, monkeypatch, capsys
):
  from gptjax.training import step  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(step, 'device_memory_bytes', lambda: 2**20)  # 1 MiB
  config = _text_config(tiny_config, corpus_glob, steps=2, warmup_steps=1)
  trainer.train_and_evaluate(config, str(tmp_path), show_progress=False)
  lines = capsys.readouterr().out.splitlines()
  (warning,) = [line for line in lines if line.startswith('warning: the memory estimate')]
  assert lines.index(warning) == 1 + next(
    i for i, line in enumerate(lines) if line.startswith('memory per device (estimate)')
  )
  assert 'model.remat' in warning and 'train.grad_accum_steps' in warning


class _Bar:
  """tqdm.tqdm's interface as train_loop uses it, counting like tqdm."""

  def __init__(self, total, initial, **kwargs):
    self.total, self.n = total, initial

  def update(self, n=1):
    self.n += n

  def set_postfix(self, *args, **kwargs):
    pass

  def write(self, text):
    pass

  def close(self):
    pass


def test_the_progress_bar_counts_steps_read_back_not_steps_dispatched(monkeypatch):
  bars = []
  monkeypatch.setattr(trainer.tqdm, 'tqdm', lambda **kwargs: bars.append(_Bar(**kwargs)) or bars[0])
  at_dispatch, at_log = [], {}

  def train_step(state, batch):
    at_dispatch.append(bars[0].n)
    metrics = {'train_loss': np.float32(1.0), 'grad_norm': np.float32(1.0), 'finite': np.True_}
    return types.SimpleNamespace(step=state.step + 1), metrics

  class Writer:
    def write(self, step, row):
      if 'train_loss' in row:
        at_log[step] = bars[0].n

  loop = trainer.Loop(
    train_step=train_step,
    batch=lambda step: None,
    evaluate=lambda state, final: {},
    save=lambda state, metrics: None,
    steps=10,
    log_every=4,
    eval_every=100,
    checkpoint_every=100,
    nonfinite='stop',
    nonfinite_field='train.nonfinite',
    schedule=lambda step: 0.1,
    seconds=collections.Counter(),
    describe=lambda step, metrics: '',
  )
  preemption = types.SimpleNamespace(agreed=lambda: False)
  trainer.train_loop(loop, types.SimpleNamespace(step=0), Writer(), preemption, True)
  # The first step is waited for (compilation); later ones show at the log steps 4, 8 and 10,
  # where their metrics are read back, while steps 5-7 and 9 are dispatched.
  assert at_dispatch == [0, 1, 1, 1, 4, 4, 4, 4, 8, 8]
  assert at_log == {4: 4, 8: 8, 10: 10} and bars[0].n == 10
