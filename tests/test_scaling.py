"""Scaling-law accounting, fits, report and command line, on synthetic runs drawn from known
laws."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.models.config import ModelConfig
from gptjax.scaling import formatting, laws, report, selection, uncertainty
from gptjax.scaling.lbfgs import batched_lbfgs
from gptjax.scaling.observations import Observations, observations, read_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Hoffmann et al.'s fit as Besiroglu et al. re-estimated it.
TRUE = laws.ChinchillaLaw(E=1.82, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)


def _chinchilla_runs(n_runs: int = 60, noise: float = 0.003, seed: int = 0):
  rng = np.random.default_rng(seed)
  n = np.exp(rng.uniform(math.log(1e6), math.log(1e9), n_runs))
  d = np.exp(rng.uniform(math.log(1e8), math.log(1e11), n_runs))
  return n, d, TRUE.predict(n, d) * np.exp(rng.normal(0, noise, n_runs))


def _isoflop_runs(budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget: int = 7):
  """Runs on isoFLOP lines of TRUE (no noise), sizes spread around the true optimum."""
  n, c = [], []
  for budget in budgets:
    n_opt, _ = TRUE.compute_optimal(budget)
    for factor in np.geomspace(1 / 8, 8, sizes_per_budget):
      n.append(n_opt * factor)
      c.append(budget)
  n, c = np.array(n), np.array(c)
  return n, c / (6 * n), c


def test_training_compute_conventions():
  model = ModelConfig(vocab_size=1000, n_ctx=128, n_layers=2, n_heads=2, d_model=64, d_ff=256)
  n = accounting.count_params(model).non_embedding
  tokens = 1e6
  assert accounting.training_compute(model, tokens) == 6 * n * tokens
  attn = 6 * 2 * 64 * 64 * tokens  # 2 n_layers seq_len d_model forward, x3; seq_len 64
  assert accounting.training_compute(model, tokens, 64, '6ND+attn') == 6 * n * tokens + attn
  assert (
    accounting.training_compute(model, tokens, 64, '6ND+attn+embed')
    == 6 * n * tokens + attn + 12 * 1000 * 64 * tokens
  )
  with pytest.raises(ValueError, match='6ND'):
    accounting.training_compute(model, tokens, convention='7ND')


def test_proposed_shapes_hit_the_size_with_a_sane_aspect_ratio():
  targets = np.geomspace(1e4, 1e8, 13)
  shapes = [accounting.propose_shape(t) for t in targets]
  for target, shape in zip(targets, shapes):
    assert shape.d_model == 16 * shape.n_heads and shape.d_ff == 4 * shape.d_model
    assert 1 / 1.6 < shape.approx_non_embedding / target < 1.6
    if shape.n_layers > 1:
      assert 16 <= shape.d_model / shape.n_layers <= 64  # around the default aspect ratio 32
  sizes = [s.approx_non_embedding for s in shapes]
  assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
  exact = accounting.count_params(
    ModelConfig(
      vocab_size=512,
      n_ctx=64,
      **{k: getattr(shapes[4], k) for k in ('n_layers', 'd_model', 'n_heads', 'd_ff')},
    )
  ).non_embedding
  assert exact == pytest.approx(shapes[4].approx_non_embedding, rel=0.02)
  wide = accounting.propose_shape(85e6, aspect_ratio=64, head_dim=64)  # GPT-2 small's N
  assert (wide.n_layers, wide.d_model, wide.n_heads) == (12, 768, 12)


def test_budget_gives_each_size_its_tokens_and_steps():
  runs = accounting.runs_for_budget(1e15, [1e6, 4e6, 1e12], batch_size=32, seq_len=128)
  assert [r.steps for r in runs] == [40690, 10173, 1]  # C / (6 N) / 4096, rounded; at least 1
  for run in runs[:2]:
    assert run.tokens == run.steps * 4096
    assert 6 * run.n * run.tokens == pytest.approx(1e15, rel=1e-4)


def test_kaplan_power_law_recovers_its_exponent_with_and_without_irreducible_loss():
  rng = np.random.default_rng(1)
  n = np.geomspace(1e5, 1e9, 12)
  loss = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, 0.002, len(n)))  # Kaplan et al.'s L(N)
  fitted = laws.fit_power_law(n, loss)
  assert fitted.alpha == pytest.approx(0.076, abs=0.003)
  assert fitted.x_c == pytest.approx(8.8e13, rel=0.5)
  loss = 1.7 + (1e6 / n) ** 0.35 * np.exp(rng.normal(0, 0.001, len(n)))
  fitted = laws.fit_power_law(n, loss, irreducible=True)
  assert (fitted.E, fitted.alpha) == (pytest.approx(1.7, rel=0.02), pytest.approx(0.35, rel=0.05))


def test_chinchilla_fit_recovers_the_law_from_the_full_grid():
  n, d, loss = _chinchilla_runs()
  fitted = laws.fit_chinchilla(n, d, loss)
  assert fitted.alpha == pytest.approx(TRUE.alpha, abs=0.02)
  assert fitted.beta == pytest.approx(TRUE.beta, abs=0.02)
  assert fitted.E == pytest.approx(TRUE.E, rel=0.03)
  assert fitted.a == pytest.approx(TRUE.a, abs=0.02)
  n_opt, d_opt = fitted.compute_optimal(1e21)
  assert 6 * n_opt * d_opt == pytest.approx(1e21)
  assert n_opt == pytest.approx(TRUE.compute_optimal(1e21)[0], rel=0.2)


def test_summed_huber_loss_fits_where_the_mean_stops_early():
  """Besiroglu et al.'s point: averaging the Huber loss over runs shrinks its gradient below
  L-BFGS's tolerance long before the optimum; summing does not."""
  n, d, loss = _chinchilla_runs(n_runs=40, noise=0.01)
  start = np.zeros((1, 5))
  summed = laws.fit_chinchilla(n, d, loss, starts=start, reduce='sum')
  averaged = laws.fit_chinchilla(n, d, loss, starts=start, reduce='mean')
  assert summed.beta == pytest.approx(TRUE.beta, abs=0.03)
  assert abs(averaged.beta - TRUE.beta) > 0.1
  objective = laws.chinchilla_objective(np.log(n)[None], np.log(d)[None], np.log(loss)[None])
  at = lambda law: objective(law.theta[None], np.zeros(1, int))[0][0]
  assert at(averaged) > 1.5 * at(summed)


def test_isoflop_minima_follow_the_true_compute_optimal_allocation():
  n, d, c = _isoflop_runs()
  obs = Observations(tuple(map(str, range(len(n)))), TRUE.predict(n, d), n=n, d=d, c=c)
  fitted = laws.fit_isoflop(obs)
  assert [len(b.index) for b in fitted.budgets] == [7] * 4
  assert fitted.a == pytest.approx(TRUE.a, abs=0.03)
  assert fitted.b == pytest.approx(TRUE.b, abs=0.03)
  for budget in fitted.budgets:
    assert budget.inside
    assert budget.n_opt == pytest.approx(TRUE.compute_optimal(budget.compute)[0], rel=0.25)


def test_the_isoflop_valley_recovers_the_surface_and_predicts_a_larger_budget():
  """On Chinchilla's surface the isoFLOP parabola's coefficient over the reducible loss at the
  minimum is alpha beta / 2 at every budget; the valley fitted to 3 budgets predicts the 4th."""
  n, d, c = _isoflop_runs(budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=7)
  names = tuple(map(str, range(len(n))))
  small = c < 1e21
  obs = Observations(names, TRUE.predict(n, d), n=n, d=d, c=c).take(np.flatnonzero(small))
  valley = laws.fit_isoflop_valley(obs)
  # sizes 8x either side of the optimum: the least-squares parabola is flatter than the curve's
  # second derivative at its minimum, by about 10% here
  assert valley.kappa == pytest.approx(TRUE.alpha * TRUE.beta / 2, rel=0.15)
  assert valley.loss_opt.E == pytest.approx(TRUE.E, rel=0.05)
  near = ~small & (np.abs(np.log(n / TRUE.compute_optimal(1e21)[0])) < np.log(3))
  assert near.sum() == 3
  predicted = valley.predict(n[near], 1e21)
  assert predicted == pytest.approx(TRUE.predict(n[near], d[near]), rel=2e-3)
  with pytest.raises(UserError, match='valley needs 3 budgets'):
    laws.fit_isoflop_valley(obs.take(np.flatnonzero(c[small] < 1e20)))


def test_bootstrap_intervals_cover_the_truth_and_holdout_predicts_the_largest_budget():
  n, d, c = _isoflop_runs(sizes_per_budget=5)
  loss = TRUE.predict(n, d) * np.exp(np.random.default_rng(2).normal(0, 0.003, len(n)))
  obs = Observations(tuple(f'run{i}' for i in range(len(n))), loss, n=n, d=d, c=c)
  fitted = laws.fit_chinchilla(n, d, loss, starts=laws.grid_starts(uncertainty.BOOTSTRAP_GRID))
  intervals, failed = uncertainty.bootstrap(obs, 'chinchilla', fitted, k=20)
  assert failed == 0
  for key in ('alpha', 'beta', 'a'):
    low, high = intervals[key]
    assert low <= getattr(fitted, key) <= high
  predictions = uncertainty.holdout(obs, 'kaplan_c', 'largest')
  assert sorted(p['C'] for p in predictions) == [1e21] * 5
  predictions = uncertainty.holdout(obs, 'chinchilla', '3')
  assert len(predictions) == 3 and all(abs(p['relative_error']) < 0.02 for p in predictions)


def test_batched_lbfgs_solves_independent_problems_at_once():
  """Rosenbrock's valley from four starts, and three quadratics that differ by row."""

  def rosenbrock(x, rows):
    a, b = x[:, 0], x[:, 1]
    grad = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
    return (1 - a) ** 2 + 100 * (b - a * a) ** 2, grad

  x, f = batched_lbfgs(rosenbrock, np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, -1.0], [1.0, 1.0]]))
  np.testing.assert_allclose(x, np.ones((4, 2)), atol=1e-6)
  assert (f < 1e-12).all()
  targets = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])

  def quadratic(x, rows):
    return ((x - targets[rows]) ** 2).sum(1), 2 * (x - targets[rows])

  x, _ = batched_lbfgs(quadratic, np.zeros((3, 2)))
  np.testing.assert_allclose(x, targets, atol=1e-9)


def test_compute_groups_and_the_frontier():
  c = np.array([1e10, 1.2e10, 1.4e10, 3e10, 3.1e10, 1e11])
  assert [list(g) for g in laws.group_by_compute(c)] == [[0, 1, 2], [3, 4], [5]]
  loss = np.array([5.0, 4.0, 4.5, 3.9, 3.0, 3.5])
  assert list(laws.pareto_frontier(c, loss)) == [0, 1, 3, 4]


def test_observations_derive_d_from_c_and_reject_bad_values():
  rows = [
    {'name': 'a', 'N': 10, 'C': 600, 'loss': 3.0},
    {'name': 'b', 'N': '20', 'C': 1200, 'loss': 2.5},
  ]
  obs = observations(rows, loss_col='loss')
  np.testing.assert_allclose(obs.d, [10, 10])
  assert obs.c_convention == 'as given in column C'
  with pytest.raises(UserError, match=r'b: N=-20.0 must be a positive number'):
    observations([rows[0], {**rows[1], 'N': -20}], loss_col='loss')
  with pytest.raises(UserError, match="no column 'eval_loss'"):
    observations(rows)
  with pytest.raises(UserError, match='chinchilla has 5 parameters but there are only 2 runs'):
    laws.fit(obs, 'chinchilla')


def _synthetic_sweep(root, extra_rows=()):
  """A results.jsonl and metrics.jsonl files as python -m gptjax.sweep leaves them, from TRUE;
  extra_rows (results rows without metrics files) first."""
  n, d, c = _isoflop_runs(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5)
  os.makedirs(root)
  with open(os.path.join(root, 'results.jsonl'), 'w') as results:
    for row in extra_rows:
      results.write(json.dumps(row) + '\n')
    for i, (n_i, d_i, c_i) in enumerate(zip(n, d, c)):
      name = f'run{i}'
      steps = 100
      os.makedirs(os.path.join(root, name))
      with open(os.path.join(root, name, 'metrics.jsonl'), 'w') as metrics:
        for step in range(10, steps + 1, 10):
          loss = float(TRUE.predict(n_i, d_i * step / steps))
          metrics.write(json.dumps({'step': step, 'train_loss': loss + 0.01}) + '\n')
          metrics.write(json.dumps({'step': step, 'eval_loss': loss}) + '\n')
      results.write(
        json.dumps(
          {
            'name': name,
            'N': n_i,
            'N_total': n_i * 1.1,
            'D': d_i,
            'unique_tokens': 1e13,
            'C': c_i,
            'C_convention': '6ND',
            'steps': steps,
            'train_loss': loss + 0.01,
            'eval_loss': loss,
            'best_eval_loss': loss,
            'tokens_per_s': 1e3,
            'wall_s': 1.0,
            'config': {},
          }
        )
        + '\n'
      )


def test_report_writes_plots_and_markdown(tmp_path):
  root = str(tmp_path / 'sweep')
  _synthetic_sweep(root)
  assert set(report.supported_laws(read_rows(root))) == {'isoflop', 'chinchilla'}
  path = report.write_report(root, str(tmp_path / 'out'), bootstrap_k=5)
  for name in ('training_curves.png', 'loss_vs_c.png', 'isoflop.png', 'compute_optimal.png'):
    with open(tmp_path / 'out' / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n', name
  with open(path) as f:
    markdown = f.read()
  for text in (
    '## Conventions',
    '`6ND`',
    'isoflop: N_opt',
    'chinchilla: L(N, D)',
    'Hold-out test',
    '95% CI (5 bootstrap fits)',
    '![compute-optimal N and D](compute_optimal.png)',
  ):
    assert text in markdown, text


def _sweep_row(name: str, n: float, d: float, **fields) -> dict:
  loss = float(TRUE.predict(n, d))
  row = {
    'name': name,
    'N': n,
    'N_total': n * 1.1,
    'D': d,
    'unique_tokens': 1e13,
    'C': 6 * n * d,
    'C_convention': '6ND',
    'steps': 100,
    'train_loss': loss + 0.01,
    'eval_loss': loss,
    'best_eval_loss': loss,
    'config': {},
  }
  return {**row, **fields}


def _sweep_with_a_repeat_and_a_divergence(root):
  """The synthetic sweep, and first two runs at its middle budget (C = 1e19) that no law may use:
  one that repeated its data 4 times (and lost for it) and one that diverged."""
  n = float(TRUE.compute_optimal(1e19)[0])
  d = 1e19 / (6 * n)
  _synthetic_sweep(
    root,
    [
      _sweep_row('repeat', n, d, unique_tokens=d / 4, eval_loss=float(TRUE.predict(n, d)) + 0.2),
      _sweep_row('diverged', 2 * n, d / 2, eval_loss=None, diverged='step 40: non-finite loss'),
    ],
  )


_LEFT_OUT = {'repeat': selection.REPEATED, 'diverged': selection.DIVERGED}


def test_fit_holdout_and_report_leave_out_the_same_runs_and_say_why(tmp_path, monkeypatch):
  """One rule: fit and holdout (selection.select, as python -m gptjax.scaling runs them) and the
  report (report.supported_laws, write_report) use the same runs, name the ones they leave out
  with why, and the report's hold-out error is the holdout command's."""
  monkeypatch.setattr(report, '_save', lambda fig, path: path)  # no PNGs: this is about the text
  root = str(tmp_path / 'sweep')
  _sweep_with_a_repeat_and_a_divergence(root)
  rows = read_rows(root)
  supported = report.supported_laws(rows)
  assert set(supported) == {'isoflop', 'chinchilla'}
  for law in ('isoflop', 'chinchilla'):
    chosen = selection.select(rows, law)
    assert dict(chosen.dropped) == _LEFT_OUT and chosen.total == 17
    assert [rows[i]['name'] for i in supported[law]] == list(chosen.obs.names)
  chosen = selection.select(rows, 'chinchilla')
  result = uncertainty.fit_with_intervals(chosen.obs, 'chinchilla', 'eval_loss', selection=chosen)
  fitted = formatting.format_fit(result)
  assert '15 of 17 runs' in fitted
  assert f'left out 1, {selection.REPEATED}: repeat' in fitted
  assert f'left out 1, {selection.DIVERGED}: diverged' in fitted
  as_json = formatting.fit_json(result)
  assert (as_json['runs'], as_json['runs_in_input']) == (15, 17)
  assert {d['name']: d['why'] for d in as_json['dropped']} == _LEFT_OUT
  predictions = uncertainty.holdout(chosen.obs, 'chinchilla', 'largest')
  table = formatting.format_holdout('chinchilla', 'largest', predictions, 15, chosen)
  assert 'chinchilla: 15 of 17 runs' in table and 'left out 1, diverged' in table
  held_out = formatting.mean_abs_relative_error(predictions)
  path = report.write_report(root, str(tmp_path / 'out'), bootstrap_k=0)
  with open(path) as f:
    markdown = f.read()
  fits = markdown[markdown.index('## Fits') :]
  for law in ('isoflop', 'chinchilla'):
    section = fits[fits.index(f'{law}: ') :]
    assert '15 of 17 runs' in section.splitlines()[1]
    assert f'left out 1, {selection.REPEATED}: repeat' in section
    assert f'left out 1, {selection.DIVERGED}: diverged' in section
  assert f'Mean absolute relative error: {held_out:.2%}.' in markdown
  assert f'mean |relative error| {held_out:.2%}' in table


def test_the_demo_sweep_has_one_selection_and_one_holdout_error():
  """experiments/results/demo_sweep: the 3 runs that repeated their data are out of Approaches 2
  and 3, and the report gives every law the runs fit and holdout take, in their order (so one
  hold-out error); Approach 2 has one budget with its minimum inside the sizes, and refuses."""
  rows = read_rows(os.path.join(REPO, 'experiments', 'results', 'demo_sweep'))
  chosen = {law: selection.select(rows, law) for law in laws.LAWS}
  assert {law: len(c.rows) for law, c in chosen.items()} == {
    'kaplan_n': 4,
    'kaplan_d': 3,
    'kaplan_c': 19,
    'isoflop': 12,
    'chinchilla': 16,
  }
  repeated = {name for name, why in chosen['chinchilla'].dropped if why == selection.REPEATED}
  assert repeated == {'data_4k', 'data_16k', 'data_64k'}
  supported = report.supported_laws(rows)
  for law, index in supported.items():
    assert [rows[i]['name'] for i in index] == list(chosen[law].obs.names)
  with pytest.raises(UserError, match='the minimum N_opt=3,632 lies outside the sizes trained'):
    laws.fit(chosen['isoflop'].obs, 'isoflop')


def test_isoflop_skips_and_names_a_budget_whose_minimum_is_extrapolated():
  n, d, c = _isoflop_runs()
  # The C = 1e20 budget trained only sizes 2x to 32x above its optimum: its parabola's minimum
  # lies below the smallest, an extrapolation.
  shifted = c == 1e20
  n = np.where(shifted, n * 16, n)
  d = c / (6 * n)
  obs = Observations(tuple(map(str, range(len(n)))), TRUE.predict(n, d), n=n, d=d, c=c)
  fitted = laws.fit_isoflop(obs)
  assert [b.compute for b in fitted.budgets] == pytest.approx([1e18, 1e19, 1e21])
  assert all(b.inside for b in fitted.budgets)
  (skipped,) = fitted.skipped
  assert skipped.startswith('C=1e+20 (7 runs): the minimum N_opt=')
  assert 'lies outside the sizes trained' in skipped
  assert fitted.a == pytest.approx(TRUE.a, abs=0.03)
  text = formatting.format_fit(uncertainty.FitResult('isoflop', fitted, obs, 'loss'))
  assert f'skipped budget {skipped}' in text
  assert formatting.fit_json(uncertainty.FitResult('isoflop', fitted, obs, 'loss'))[
    'skipped_budgets'
  ] == [skipped]
  two = obs.take(np.flatnonzero((c == 1e19) | shifted))
  with pytest.raises(UserError, match=r'found 1 \(C=1e\+20 \(7 runs\): the minimum'):
    laws.fit_isoflop(two)


def test_the_same_command_gives_the_same_digits_whatever_the_order_of_the_rows(
  tmp_path, monkeypatch
):
  """The bootstrap is seeded and the selection sorts the runs: a fit, its intervals and the report
  are the same twice, and the same again from the rows in another order."""
  monkeypatch.setattr(report, '_save', lambda fig, path: path)  # no PNGs: this is about the text
  root = str(tmp_path / 'sweep')
  _sweep_with_a_repeat_and_a_divergence(root)
  rows = read_rows(root)

  def fit_text(rows, law, k):
    chosen = selection.select(rows, law)
    result = uncertainty.fit_with_intervals(chosen.obs, law, chosen.loss_col, k, selection=chosen)
    return formatting.format_fit(result) + '\n' + json.dumps(formatting.fit_json(result))

  def numbers(text):  # all but the runs left out, which are listed in the file's order
    return [line for line in text.splitlines() if 'left out' not in line and 'dropped' not in line]

  first = fit_text(rows, 'isoflop', 30)
  assert '95% CI (' in first
  assert fit_text(rows, 'isoflop', 30) == first
  assert numbers(fit_text(rows[::-1], 'isoflop', 30)) == numbers(first)
  first = fit_text(rows, 'chinchilla', 4)  # the order of the sum over runs changes no digit
  assert numbers(fit_text(rows[::-1], 'chinchilla', 4)) == numbers(first)
  out = [str(tmp_path / 'first'), str(tmp_path / 'second')]
  report.write_report(root, out[0], bootstrap_k=3)
  with open(os.path.join(root, 'results.jsonl'), 'w') as f:
    f.writelines(json.dumps(row) + '\n' for row in rows[::-1])
  report.write_report(root, out[1], bootstrap_k=3)
  fits = []
  for directory in out:
    with open(os.path.join(directory, 'report.md')) as f:
      markdown = f.read()
    fits.append(markdown[markdown.index('## Fits') :])
  assert numbers(fits[0]) == numbers(fits[1]) and '95% CI (3 bootstrap fits)' in fits[0]


def test_a_fit_that_is_not_identified_says_why_instead_of_its_numbers():
  n, d, c = _isoflop_runs(budgets=(1e18, 1e19))
  obs = Observations(tuple(map(str, range(len(n)))), TRUE.predict(n, d), n=n, d=d, c=c)
  result = uncertainty.fit_with_intervals(obs, 'isoflop', 'loss', 20)
  identified, why = result.identification
  assert identified is False and why.startswith('2 usable compute budgets; Approach 2 needs 3')
  text = formatting.format_fit(result)
  assert f'not identified: {why}' in text
  assert 'parameter' not in text and 'N_opt_coefficient' not in text
  assert formatting.fit_json(result)['identified'] is False
  # Three sizes across 10%, 5% noise: the exponent's interval is far wider than 1.
  rng = np.random.default_rng(0)
  n = np.repeat([1.0e6, 1.05e6, 1.1e6], 2)
  loss = 3 * (1e6 / n) ** 0.1 * np.exp(rng.normal(0, 0.05, len(n)))
  obs = Observations(tuple(map(str, range(len(n)))), loss, n=n)
  result = uncertainty.fit_with_intervals(obs, 'kaplan_n', 'loss', 50)
  identified, why = result.identification
  assert identified is False and 'the 95% interval of alpha_N' in why and 'wide' in why
  as_json = formatting.fit_json(result)
  assert as_json['identified'] is False and as_json['why'] == why and 'alpha_N' in as_json
  assert '\n  alpha_N ' not in formatting.format_fit(result)  # no row of the table
  # Twelve sizes over four decades: identified; without a bootstrap, not checked.
  n = np.geomspace(1e5, 1e9, 12)
  loss = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, 0.002, len(n)))
  obs = Observations(tuple(map(str, range(len(n)))), loss, n=n)
  result = uncertainty.fit_with_intervals(obs, 'kaplan_n', 'loss', 50)
  assert result.identification == (True, '')
  assert '\n  alpha_N ' in formatting.format_fit(result)
  unchecked = uncertainty.fit_with_intervals(obs, 'kaplan_n', 'loss')
  assert unchecked.identification[0] is None
  assert formatting.fit_json(unchecked)['identified'] is None


def test_rows_without_a_sweeps_columns_keep_every_run_with_a_loss():
  """A CSV of N, D and loss has no unique_tokens: no series or repeated-data rule applies, and
  only a run with no loss is left out, by its line's name."""
  rows = [
    {'N': str(1e6 * 2**i), 'D': str(1e9 * 3**i), 'loss': str(3.0 - 0.1 * i)} for i in range(6)
  ]
  rows[2]['loss'] = ''
  for law in ('kaplan_n', 'kaplan_c', 'chinchilla'):
    chosen = selection.select(rows, law, loss_col='loss')
    assert chosen.dropped == (('row 3', 'no loss (the run did not finish)'),)
    assert sorted(chosen.obs.names) == ['row 1', 'row 2', 'row 4', 'row 5', 'row 6']
  with pytest.raises(UserError, match=r'1 in compute budget C=6e\+15, which has 1 model size'):
    selection.select(rows, 'isoflop', loss_col='loss')  # every run alone in its budget
  with pytest.raises(UserError, match="no column 'eval_loss'"):
    selection.select(rows, 'kaplan_n')


def _scaling(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.scaling', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.slow
def test_fit_command_prints_json_with_user_column_names(tmp_path):
  n, d, c = _isoflop_runs()
  path = tmp_path / 'runs.csv'
  path.write_text(
    'params,flops,loss\n'
    + ''.join(f'{n_i},{c_i},{loss}\n' for n_i, c_i, loss in zip(n, c, TRUE.predict(n, d)))
  )
  result = _scaling(
    'fit',
    str(path),
    '--law',
    'isoflop',
    '--n_col',
    'params',
    '--c_col',
    'flops',
    '--loss_col',
    'loss',
    '--bootstrap',
    '10',
    '--json',
  )
  assert result.returncode == 0, result.stderr
  fitted = json.loads(result.stdout)
  assert fitted['a'] == pytest.approx(TRUE.a, abs=0.03) and fitted['runs'] == 28
  assert fitted['C_convention'] == 'as given in column flops'
  assert set(fitted['ci95']) == {'a', 'b', 'N_opt_coefficient', 'D_opt_coefficient'}
  table = _scaling('fit', str(path), '--law', 'kaplan_n', '--n_col', 'params', '--loss_col', 'loss')
  assert table.returncode == 0 and 'alpha_N' in table.stdout


_TWO_RUNS = 'N,D,loss\n1e6,1e9,3.0\n2e6,2e9,2.9\n'


@pytest.mark.slow
@pytest.mark.parametrize(
  'content, args, message',
  [
    (_TWO_RUNS, ['--law', 'chinchilla'], 'only 2 runs'),
    (
      'N,D,loss\n1e6,1e9,3.0\n0,2e9,2.9\n',
      ['--law', 'kaplan_n'],
      'N=0.0 must be a positive number',
    ),
    ('N,D,loss\n1e6,1e9,3.0\n2e6,2e9,-1\n', ['--law', 'kaplan_n'], 'loss=-1.0 must be'),
    (_TWO_RUNS, ['--law', 'kaplan_c', '--loss_col', 'x'], "no column 'x'"),
    ('N,loss\n1e6,3.0\n2e6,2.9\n', ['--law', 'kaplan_d'], 'kaplan_d needs D'),
    (
      'N,C,loss\n1e6,1e9,3.0\n2e6,2e9,2.9\n',
      ['--law', 'kaplan_n', '--n_col', 'params'],
      "no column 'params' (--n_col)",
    ),
    (_TWO_RUNS, ['--law', 'kaplan'], 'flag --law=kaplan: value should be one of <kaplan_n|'),
    (_TWO_RUNS, ['--law', 'kaplan_n', '--bootstrap', '-1'], '-1 is not a non-negative integer'),
    (_TWO_RUNS, ['--law', 'kaplan_n', '--no_such_flag'], 'no_such_flag'),
    (_TWO_RUNS, [], 'fit needs --law'),
    (_TWO_RUNS, ['--law', 'kaplan_n', '--hold_out', '1'], '--hold_out does not apply to fit'),
  ],
)
def test_bad_input_is_one_error_line(tmp_path, content, args, message):
  path = tmp_path / 'runs.csv'
  path.write_text(content)
  result = _scaling('fit', str(path), '--loss_col', 'loss', *args)
  assert result.returncode in (1, 2)
  assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, result.stderr
  assert message in result.stderr


@pytest.mark.slow
def test_fit_and_holdout_commands_print_the_runs_they_left_out(tmp_path):
  root = str(tmp_path / 'sweep')
  _sweep_with_a_repeat_and_a_divergence(root)
  chosen = selection.select(read_rows(root), 'chinchilla')
  expected = formatting.mean_abs_relative_error(uncertainty.holdout(chosen.obs, 'chinchilla'))
  fit = _scaling('fit', root, '--law', 'chinchilla', '--json')
  assert fit.returncode == 0, fit.stderr
  fitted = json.loads(fit.stdout)
  assert (fitted['runs'], fitted['runs_in_input']) == (15, 17)
  assert {d['name']: d['why'] for d in fitted['dropped']} == _LEFT_OUT
  held = _scaling('holdout', root)
  assert held.returncode == 0, held.stderr
  assert 'chinchilla: 15 of 17 runs' in held.stdout
  assert f'left out 1, {selection.REPEATED}: repeat' in held.stdout
  assert f'left out 1, {selection.DIVERGED}: diverged' in held.stdout
  assert f'mean |relative error| {expected:.2%}' in held.stdout
  held = json.loads(_scaling('holdout', root, '--json').stdout)
  assert held['mean_abs_relative_error'] == expected
  assert {d['name'] for d in held['dropped']} == set(_LEFT_OUT) and held['fitted_runs'] == 10


@pytest.mark.slow
def test_a_directory_without_results_is_one_error_line(tmp_path):
  result = _scaling('report', str(tmp_path))
  assert result.returncode == 1
  assert result.stderr == f'error: no results file at {tmp_path}/results.jsonl\n'
  result = _scaling('holdout', str(tmp_path))
  assert result.returncode == 1
  assert result.stderr == f'error: no results file at {tmp_path}/results.jsonl\n'


@pytest.mark.parametrize(
  'name, data, message',
  [
    # A ragged row (and a --loss_col that is absent: the row is found first).
    (
      'runs.csv',
      b'N,D,loss\n1e6,1e9,3.0\n2e6,2e9\n',
      r'runs\.csv:3: 2 fields where the header has 3',
    ),
    ('runs.csv', b'N,D,loss\n1e6,1e9,3.0,7\n', r'runs\.csv:2: 4 fields where the header has 3'),
    ('runs.csv', b'N,D,loss\n1e6,1e9,\xff3.0\n', r'runs\.csv:2: not UTF-8 text \(byte 0xff'),
    ('runs.jsonl', b'{"N": 1e6}\n\n{"N": 2e6, "D":\n', r'runs\.jsonl:3: not valid JSON'),
    ('runs.jsonl', b'{"N": 1e6}\n[1]\n', r'runs\.jsonl:2: expected a JSON object'),
  ],
)
def test_a_malformed_results_file_names_its_line(tmp_path, name, data, message):
  path = tmp_path / name
  path.write_bytes(data)
  with pytest.raises(UserError, match=message):
    observations(read_rows(str(path)), loss_col='nope', named={'--loss_col': 'nope'})
