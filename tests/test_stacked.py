"""Stacked runs (gptjax/training/stacked.py) against the same runs trained one by one: the same
numbers to float32 rounding, each workdir as gptjax.main leaves it (resumable on its own), a
diverging run retired without stopping the rest, and exact resume of a group after kill -9."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import write_corpus

from gptjax.configs import tiny
from gptjax.errors import UserError
from gptjax.scaling import sweep
from gptjax.training import stacked, trainer
from gptjax.training.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (lr, seed, steps): another learning rate, initialisation, data order and schedule length each.
RUNS = [(1e-3, 0, 20), (3e-3, 1, 20), (1e-2, 0, 14)]


def _config(corpus_glob: str, lr: float, seed: int, steps: int):
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.update(source='text_files', text_files=corpus_glob)
  config.seed = seed
  config.train.update(
    lr=lr, steps=steps, warmup_steps=2, log_every=5, eval_every=10, checkpoint_every=10
  )
  config.train.final_eval_batches = 3  # the last evaluation reads more batches than the others
  return config


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp('corpus'))


@pytest.fixture(scope='module')
def separate(corpus, tmp_path_factory):
  """The runs of RUNS trained one after another by gptjax.main's trainer: (workdir, metrics)."""
  root = tmp_path_factory.mktemp('separate')
  return [
    (
      str(root / f'run{k}'),
      trainer.train_and_evaluate(_config(corpus, *run), str(root / f'run{k}'), False),
    )
    for k, run in enumerate(RUNS)
  ]


def _params(workdir: str):
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  state = mngr.restore(step, args=ocp.args.StandardRestore())
  mngr.close()
  return step, jax.tree.map(np.asarray, state['params'])


def _assert_same_run(workdir_a: str, workdir_b: str) -> None:
  """The same step, and every parameter within 1e-3 of its size (RMS over each array): Adam's
  normalised step turns float32 rounding in a near-zero gradient into a full-size update of that
  coordinate, so single values may differ by a few 1e-5."""
  (step_a, a), (step_b, b) = _params(workdir_a), _params(workdir_b)
  assert step_a == step_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.sqrt(np.mean((x - y) ** 2)) <= 1e-3 * np.sqrt(np.mean(x**2)) + 1e-7


def test_stacked_runs_match_the_same_runs_trained_one_by_one(corpus, separate, tmp_path):
  workdirs = [str(tmp_path / f'run{k}') for k in range(len(RUNS))]
  results = stacked.train_stacked(
    [(_config(corpus, *run), w) for run, w in zip(RUNS, workdirs)], show_progress=False
  )
  for (alone_dir, alone), together, workdir in zip(separate, results, workdirs):
    # Measured: final losses equal to 3e-6 (often to the bit).
    assert together['eval_loss'] == pytest.approx(alone['eval_loss'], abs=1e-5)
    assert together['eval_loss_se'] == pytest.approx(alone['eval_loss_se'], abs=1e-5)
    assert together['stacked'] == len(RUNS)
    _assert_same_run(alone_dir, workdir)
    # The same metrics rows, each run at its own cadence and length.
    rows, alone_rows = read_metrics(workdir), read_metrics(alone_dir)
    assert [(r['step'], sorted(r)) for r in rows] == [
      (r['step'], sorted(set(r) - {'mfu'})) for r in alone_rows
    ]
    for row, alone_row in zip(rows, alone_rows):
      if 'train_loss' in row:
        assert row['train_loss'] == pytest.approx(alone_row['train_loss'], abs=2e-5)
        assert row['lr'] == pytest.approx(alone_row['lr'], rel=1e-6)


def test_a_stacked_run_resumes_on_its_own_with_gptjax_main(corpus, separate, tmp_path):
  workdirs = [str(tmp_path / f'run{k}') for k in range(2)]
  configs = [_config(corpus, *run) for run in RUNS[:2]]
  stacked.train_stacked(list(zip(configs, workdirs)), show_progress=False, stop_at=10)
  assert _params(workdirs[0])[0] == 10
  metrics = trainer.train_and_evaluate(configs[0], workdirs[0], show_progress=False)
  assert metrics['eval_loss'] == pytest.approx(separate[0][1]['eval_loss'], abs=1e-5)
  _assert_same_run(separate[0][0], workdirs[0])


def test_a_diverging_run_is_retired_and_the_others_finish(corpus, separate, tmp_path):
  configs = [_config(corpus, *RUNS[0]), _config(corpus, 1e6, 0, 20)]
  configs[1].train.checkpoint_every = 2
  workdirs = [str(tmp_path / 'good'), str(tmp_path / 'diverges')]
  results = stacked.train_stacked(list(zip(configs, workdirs)), show_progress=False)
  assert 'diverged' not in results[0]
  assert results[0]['eval_loss'] == pytest.approx(separate[0][1]['eval_loss'], abs=1e-5)
  assert 'not finite' in results[1]['diverged'] or 'loss is' in results[1]['diverged']
  step, params = _params(workdirs[1])  # its last checkpoint, from before the divergence
  assert step < 20 and all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_runs_of_different_shapes_do_not_stack(corpus, tmp_path):
  wide = _config(corpus, *RUNS[0])
  wide.model.d_model = 64
  with pytest.raises(UserError, match='share everything but'):
    stacked.train_stacked(
      [(_config(corpus, *RUNS[0]), str(tmp_path / 'a')), (wide, str(tmp_path / 'b'))]
    )
  assert stacked.group_key(wide) != stacked.group_key(_config(corpus, *RUNS[0]))
  assert stacked.group_key(_config(corpus, *RUNS[0])) == stacked.group_key(
    _config(corpus, *RUNS[1])
  )


SWEEP = """
from gptjax.configs import tiny
def get_config():
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.update(source='text_files', text_files={corpus!r})
  config.train.update(steps={steps}, warmup_steps=5, log_every=10, eval_every=100,
                      checkpoint_every=20, keep_checkpoints=2)
  return config
def get_runs():
  return [(f'lr{{i}}', {{'train.lr': 1e-3 * 2 ** i, 'seed': i}}) for i in range(3)]
"""


def _sweep_file(tmp_path, corpus: str, steps: int) -> str:
  path = tmp_path / f'sweep_{steps}.py'
  path.write_text(SWEEP.format(corpus=corpus, steps=steps))
  return str(path)


def test_a_sweep_stacks_runs_of_one_shape(corpus, tmp_path):
  path = _sweep_file(tmp_path, corpus, 20)
  rows = sweep.run_sweep(path, str(tmp_path / 'root'), show_progress=False)
  assert [row['stacked'] for row in rows] == [3, 3, 3]
  assert len({row['eval_loss'] for row in rows}) == 3  # three learning rates, three losses
  one_by_one = sweep.run_sweep(path, str(tmp_path / 'alone'), show_progress=False, max_stack=1)
  assert [row['stacked'] for row in one_by_one] == [1, 1, 1]
  for row, alone in zip(rows, one_by_one):
    assert row['eval_loss'] == pytest.approx(alone['eval_loss'], abs=1e-5)


def _sweep_command(path: str, root) -> list[str]:
  return [sys.executable, '-m', 'gptjax.sweep', 'run', path, '--root', str(root)]


def _final_states(root) -> list:
  states = []
  for name in ('lr0', 'lr1', 'lr2'):
    mngr = ocp.CheckpointManager(os.path.join(root, name, 'checkpoints'))
    step = mngr.latest_step()
    states.append((step, jax.tree.map(np.asarray, mngr.restore(step))))
    mngr.close()
  return states


@pytest.mark.slow
def test_a_stacked_group_killed_mid_run_resumes_to_the_same_bits(corpus, tmp_path):
  path = _sweep_file(tmp_path, corpus, 300)
  reference = subprocess.run(
    _sweep_command(path, tmp_path / 'reference'), cwd=REPO, capture_output=True, text=True
  )
  assert reference.returncode == 0, reference.stderr
  killed = tmp_path / 'killed'
  process = subprocess.Popen(
    _sweep_command(path, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  fingerprints = [killed / name / 'checkpoints' / 'fingerprints.json' for name in ('lr0', 'lr2')]
  deadline = time.time() + 120
  while not all(f.exists() for f in fingerprints) and time.time() < deadline:
    time.sleep(0.05)
  process.kill()  # SIGKILL: no handler, no cleanup
  process.wait()
  assert not (killed / 'results.jsonl').exists(), 'the group finished before it was killed'
  resumed = subprocess.run(_sweep_command(path, killed), cwd=REPO, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr
  assert 'resuming from step' in resumed.stdout
  for (step_a, a), (step_b, b) in zip(_final_states(tmp_path / 'reference'), _final_states(killed)):
    assert step_a == step_b == 300
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
  rows = [json.loads(line) for line in open(killed / 'results.jsonl')]
  assert [row['stacked'] for row in rows] == [3, 3, 3]


def test_stacked_runs_are_data_parallel_over_several_devices(corpus, separate, tmp_path):
  """The same group on 4 (simulated) devices, each holding a quarter of every run's batch."""
  script = (
    'import json, sys\n'
    'sys.path.insert(0, "tests")\n'
    'import jax\n'
    'from test_stacked import RUNS, _config\n'
    'from gptjax.training import stacked\n'
    f'runs = [(_config({corpus!r}, *run), {str(tmp_path)!r} + f"/run{{k}}") '
    'for k, run in enumerate(RUNS[:2])]\n'
    'results = stacked.train_stacked(runs, show_progress=False)\n'
    'print(json.dumps([jax.device_count(), [r["eval_loss"] for r in results]]))\n'
  )
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  result = subprocess.run(
    [sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr[-3000:]
  devices, losses = json.loads(result.stdout.strip().splitlines()[-1])
  assert devices == 4
  for loss, (_, alone) in zip(losses, separate):
    assert loss == pytest.approx(alone['eval_loss'], abs=1e-5)
