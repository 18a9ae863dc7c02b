"""Tuning per scale (gptjax/scaling/tuning.py): grids, optima, the tuned frontier, hyperparameter
laws and seed noise, on numbers whose answers are known."""

import json
import math

import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.scaling import tuning
from gptjax.scaling.observations import read_rows


def test_expand_takes_the_product_of_the_grid_for_every_run():
  runs = [('d32', {'model.d_model': 32}), ('d64', {'model.d_model': 64})]
  grid = {'train.lr': {'lr1': 1e-3, 'lr2': 2e-3}, 'train.b2': {'b95': 0.95, 'b99': 0.99}}
  expanded = dict(tuning.expand(runs, grid))
  assert len(expanded) == 8
  assert expanded['d64_lr2_b99'] == {'model.d_model': 64, 'train.lr': 2e-3, 'train.b2': 0.99}
  with pytest.raises(UserError, match='at least one value'):
    tuning.expand(runs, {'train.lr': {}})


def test_with_seeds_keeps_seed_zero_under_the_run_name():
  runs = tuning.with_seeds([('a', {'train.lr': 1e-3})], 3)
  assert runs == [
    ('a', {'train.lr': 1e-3}),
    ('a_seed1', {'train.lr': 1e-3, 'seed': 1}),
    ('a_seed2', {'train.lr': 1e-3, 'seed': 2}),
  ]


def test_optimum_is_the_vertex_of_a_parabola_in_log_lr():
  lrs = [1e-4 * 2**k for k in range(7)]
  true_best = 1e-4 * 2**3.4
  losses = [(math.log(lr) - math.log(true_best)) ** 2 + 2.0 for lr in lrs]
  found = tuning.optimum(lrs, losses, [f'r{k}' for k in range(7)])
  assert found.value == pytest.approx(true_best, rel=1e-6)
  assert not found.at_edge and found.best_run == 'r3' and found.points == 7


def test_optimum_at_the_grid_edge_is_flagged_and_diverged_runs_lose():
  lrs = [1e-3, 2e-3, 4e-3]
  edge = tuning.optimum(lrs, [3.0, 2.9, 2.8], ['a', 'b', 'c'])
  assert edge.at_edge and edge.value == pytest.approx(4e-3)
  # The largest rate diverged: the best finite one is bracketed by it, not at the grid's edge.
  bracketed = tuning.optimum(lrs, [3.0, 2.9, None], ['a', 'b', 'c'])
  assert not bracketed.at_edge and bracketed.best_run == 'b' and bracketed.points == 2
  with pytest.raises(UserError, match='no run'):
    tuning.optimum(lrs, [None, float('nan'), None], ['a', 'b', 'c'])


def test_runs_of_one_value_under_several_seeds_count_as_their_mean():
  lrs = [1e-3, 2e-3, 2e-3, 4e-3]
  # seed 1 at 2e-3 is lucky; the mean of the two (2.85) still beats 1e-3, and the parabola runs
  # through the three values, not through two points at one value
  found = tuning.optimum(lrs, [3.0, 2.9, 2.8, 2.95], ['a', 'b', 'b_seed1', 'c'])
  assert found.best_run == 'b' and found.loss == pytest.approx(2.85) and found.points == 3
  log_lrs = [math.log(v) for v in (1e-3, 2e-3, 4e-3)]
  a, b, _ = np.polyfit(log_lrs, [3.0, 2.85, 2.95], 2)
  assert found.value == pytest.approx(math.exp(-b / (2 * a)), rel=1e-9)


def _row(name, n, d, lr, loss, parametrization='sp'):
  config = {'train': {'lr': lr}, 'model': {'d_model': n, 'parametrization': parametrization}}
  return {'name': name, 'N': n, 'D': d, 'eval_loss': loss, 'config': config}


def test_tuned_frontier_keeps_the_best_run_of_every_n_and_d():
  rows = [
    _row('small_lo', 1e5, 1e7, 1e-3, 3.1),
    _row('small_mid', 1e5, 1e7, 2e-3, 3.0),
    _row('small_hi', 1e5, 1e7, 4e-3, 3.2),
    _row('small_mup', 1e5, 1e7, 4e-3, 2.95, 'mup'),  # another curve at the same (N, D)
    _row('large_lo', 1e6, 1e7, 1e-3, 2.7),
    _row('large_hi', 1e6, 1e7, 2e-3, None),
  ]
  frontier, found = tuning.tuned_frontier(rows)
  assert [row['name'] for row in frontier] == ['small_mup', 'large_lo']
  # Three curves: the runs differ in the learning rate only within each.
  assert [[r['name'] for r in curve] for curve, _ in found] == [
    ['small_lo', 'small_mid', 'small_hi'],
    ['small_mup'],
    ['large_lo', 'large_hi'],
  ]
  optima = [o for _, o in found]
  assert not optima[0].at_edge and optima[0].best_run == 'small_mid'
  assert optima[1].at_edge  # one run: nothing was tuned
  assert optima[2].at_edge  # its best is the grid's smallest rate


def test_tuned_frontier_keeps_each_data_size_of_an_l_of_d_sweep_and_ranks_by_the_loss_asked():
  """Kaplan's L(D): one model and one D trained, on different numbers of unique tokens."""

  def row(name, unique, lr, final, best):
    config = {'train': {'lr': lr}, 'data': {'max_train_tokens': unique}}
    return {
      'name': name,
      'N': 1e5,
      'D': 1e7,
      'unique_tokens': unique,
      'eval_loss': final,
      'best_eval_loss': best,
      'config': config,
    }

  rows = [
    row('small_lo', 1e5, 1e-3, 3.0, 2.9),
    row('small_hi', 1e5, 2e-3, 3.3, 2.6),  # overfits more, but stopped early it is the best
    row('large_lo', 1e7, 1e-3, 2.5, 2.5),
    row('large_hi', 1e7, 2e-3, 2.4, 2.4),
  ]
  frontier, _ = tuning.tuned_frontier(rows)
  assert [r['name'] for r in frontier] == ['small_lo', 'large_hi']
  early, _ = tuning.tuned_frontier(rows, 'train.lr', 'best_eval_loss')
  assert [r['name'] for r in early] == ['small_hi', 'large_hi']


def test_hyperparameter_law_recovers_a_known_power_law():
  n = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
  rng = np.random.default_rng(0)
  lrs = 0.3 * n**-0.25 * np.exp(rng.normal(0, 0.02, len(n)))
  law = tuning.fit_hyperparameter_law(list(n), list(lrs))
  assert law.exponent == pytest.approx(-0.25, abs=0.03)
  low, high = law.exponent_interval
  assert low < law.exponent < high and low < -0.25 < high
  assert law.predict(1e8) == pytest.approx(0.3 * 1e8**-0.25, rel=0.15)
  with pytest.raises(UserError, match='2 or more distinct N'):
    tuning.fit_hyperparameter_law([1e5, 1e5], [1e-3, 2e-3])


def test_porian_warmup_is_n_tokens_and_beta2_keeps_its_half_life_in_tokens():
  assert tuning.porian_warmup_steps(1_000_000, 4096) == 244
  assert tuning.porian_warmup_steps(10, 4096) == 1
  assert tuning.beta2_for_batch(524_288) == pytest.approx(0.95)
  small = tuning.beta2_for_batch(4096)
  assert 0.95 < small < 1
  half_life_tokens = lambda beta2, tokens: math.log(0.5) / math.log(beta2) * tokens
  assert half_life_tokens(small, 4096) == pytest.approx(half_life_tokens(0.95, 524_288))


def test_seed_noise_is_the_standard_deviation_over_seeds():
  rows = [
    {'name': 'a', 'eval_loss': 3.0},
    {'name': 'a_seed1', 'eval_loss': 3.2},
    {'name': 'a_seed2', 'eval_loss': 3.1},
    {'name': 'b', 'eval_loss': 2.0},
  ]
  noise = tuning.seed_noise(rows)
  assert noise['a'] == pytest.approx(0.1) and 'b' not in noise and noise['median'] == noise['a']


def test_tune_command_prints_each_curves_optimum_and_the_law(tmp_path):
  import json
  import subprocess
  import sys

  rows = []
  for n in (1e5, 4e5, 1.6e6):
    best = 0.3 * n**-0.25
    for k in range(5):
      lr = best * 2 ** (k - 2.3)
      loss = 3.0 + (math.log(lr) - math.log(best)) ** 2
      rows.append({**_row(f'n{n:g}_lr{k}', n, 1e7, lr, loss), 'C': 6 * n * 1e7})
      rows.append({**_row(f'n{n:g}_lr{k}_mup', n, 1e7, 0.01, loss + 1, 'mup'), 'C': 6 * n * 1e7})
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  command = [sys.executable, '-m', 'gptjax.scaling', 'tune', str(path), '--json']
  result = subprocess.run(
    [*command, '--where', 'model.parametrization=sp'], capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout)
  assert len(printed['optima']) == 3 and not any(o['at_edge'] for o in printed['optima'])
  assert printed['law']['exponent'] == pytest.approx(-0.25, abs=1e-3)
  refused = subprocess.run(
    [*command, '--where', 'model.parametrization=xp'], capture_output=True, text=True
  )
  assert refused.returncode == 1 and refused.stderr.startswith('error: --where')


def test_rows_written_before_a_field_was_added_join_the_curves_of_rows_written_after(tmp_path):
  config = lambda lr, **data: {'train': {'lr': lr}, 'data': {'max_train_tokens': 0, **data}}
  rows = [
    {'name': 'old', 'N': 1e5, 'D': 1e7, 'eval_loss': 3.0, 'config': config(1e-3)},
    {
      'name': 'new',
      'N': 1e5,
      'D': 1e7,
      'eval_loss': 2.9,
      'config': config(2e-3, train_subset='first'),
    },
  ]
  (tmp_path / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert [[r['name'] for r in curve] for curve in tuning.curves(read_rows(str(tmp_path)))] == [
    ['old', 'new']
  ]
