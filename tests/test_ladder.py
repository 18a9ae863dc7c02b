"""The ladder check (gptjax/scaling/ladder.py): a law fitted on small budgets predicts a larger
budget's runs, the prediction is written before they exist and never remade, and the check
compares each prediction with the best of its runs."""

import json

import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.scaling import ladder

TRUE = dict(E=1.2, A=40.0, B=300.0, alpha=0.35, beta=0.4)
LR_FACTORS = (0.5, 1.0, 2.0)


def _loss(n, d, lr_factor=1.0):
  """The true law, worse away from the best learning rate (factor 1)."""
  return (
    TRUE['E'] + TRUE['A'] / n ** TRUE['alpha'] + TRUE['B'] / d ** TRUE['beta']
  ) + 0.05 * np.log(lr_factor) ** 2


def _rows(budgets, sizes_per_budget=5):
  rows = []
  for budget in budgets:
    middle = np.sqrt(budget / 6 / 20)
    for n in middle * np.geomspace(0.25, 4, sizes_per_budget):
      n, d = float(round(n)), budget / (6 * round(n))
      for factor in LR_FACTORS:
        rows.append(
          {
            'name': f'C{budget:.1e}_N{n:.0f}_lrx{factor}',
            'N': n,
            'D': d,
            'C': 6 * n * d,
            'unique_tokens': 1e12,
            'eval_loss': float(_loss(n, d, factor)),
            'config': {'model': {'n': n}, 'train': {'lr': factor, 'steps': d}, 'seed': 0},
          }
        )
  return rows


def _targets(budget):
  targets = []
  for row in _rows([budget]):
    key = row['name'].rsplit('_lrx', 1)[0]
    if not targets or targets[-1]['name'] != key:
      targets.append({'name': key, 'N': row['N'], 'D': row['D'], 'runs': []})
    targets[-1]['runs'].append(row['name'])
  return targets


def test_the_law_of_the_small_budgets_predicts_the_large_one():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  prediction = ladder.predict(rows, _targets(3.2e16), budget=3.2e16, fit_below=8e15)
  assert len(prediction['fit_runs']) == 20  # the best learning rate of each of 20 (N, D)
  # Noiseless, yet not exact: over 16x in D the fit trades B against beta (the Huber objective is
  # nearly flat along that valley), which costs a few tenths of a percent 4x beyond the data.
  for target in prediction['targets']:
    assert target['predicted'] == pytest.approx(_loss(target['N'], target['D']), rel=5e-3)
  law = prediction['chinchilla']
  assert law['alpha'] == pytest.approx(TRUE['alpha'], rel=0.02)
  true_a = TRUE['beta'] / (TRUE['alpha'] + TRUE['beta'])
  assert law['a'] == pytest.approx(true_a, rel=0.05)
  assert prediction['isoflop']['a'] == pytest.approx(true_a, rel=0.01)
  # the predicted optimum is the law's minimum along C = 6ND
  optimum = prediction['optimum']
  assert 6 * optimum['N'] * optimum['D'] == pytest.approx(3.2e16, rel=1e-6)
  for scale in (0.8, 1.25):
    n, d = optimum['N'] * scale, optimum['D'] / scale
    assert _loss(n, d) > optimum['loss']
  assert prediction['lr_at_grid_edge'] == []
  assert prediction['predicted_at'].endswith('+00:00')


def test_runs_above_fit_below_and_repeated_data_are_not_fitted():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  rows[0]['unique_tokens'] = rows[0]['D'] / 2  # repeated its data
  prediction = ladder.predict(rows, _targets(3.2e16), budget=3.2e16, fit_below=4e15)
  assert len(prediction['fit_runs']) == 15
  assert all(not name.startswith('C8.0e15') for name in prediction['fit_runs'])


def test_a_prediction_is_refused_once_its_runs_exist(tmp_path):
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  targets = _targets(3.2e16)
  trained = _rows([3.2e16])[:1]
  with pytest.raises(UserError, match='trained already'):
    ladder.predict(rows + trained, targets, budget=3.2e16, fit_below=8e15)
  path = tmp_path / 'prediction.json'
  prediction = ladder.predict(rows, targets, budget=3.2e16, fit_below=8e15)
  ladder.write_prediction(prediction, str(path))
  with pytest.raises(UserError, match='not remade'):
    ladder.write_prediction(prediction, str(path))
  assert json.loads(path.read_text()) == prediction


def test_the_check_compares_each_target_with_its_best_run():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  prediction = ladder.predict(rows, _targets(3.2e16), budget=3.2e16, fit_below=8e15)
  large = _rows([3.2e16])
  result = ladder.check(prediction, rows + large[:-1], noise=0.01)  # the last run not yet trained
  assert result['incomplete'] == [prediction['targets'][-1]['name']]
  assert [r['best_run'] for r in result['runs']] == [t['runs'][1] for t in prediction['targets']]
  for r in result['runs']:
    assert r['actual'] == pytest.approx(
      _loss(*[(t['N'], t['D']) for t in prediction['targets'] if t['name'] == r['name']][0])
    )
    assert r['error_in_noise_sd'] == pytest.approx((r['predicted'] - r['actual']) / 0.01)
  assert result['mean_abs_relative_error'] < 5e-3
  with pytest.raises(UserError, match='has a result yet'):
    ladder.check(prediction, rows)


def test_the_predicted_optimum_is_placed_and_predicted_with_the_rest():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  place = lambda n_opt: {
    'name': 'optimum',
    'N': round(n_opt, -2),  # the nearest shape one can build
    'D': 3.2e16 / (6 * round(n_opt, -2)),
    'runs': ['optimum_lrx1'],
  }
  prediction = ladder.predict(
    rows, _targets(3.2e16), budget=3.2e16, fit_below=8e15, place_optimum=place
  )
  optimum = prediction['targets'][-1]
  assert optimum['optimum'] and optimum['N'] == round(prediction['optimum']['N'], -2)
  assert optimum['predicted'] == pytest.approx(prediction['optimum']['loss'], rel=1e-4)
  trained = [{**rows[0], 'name': 'optimum_lrx1'}]
  with pytest.raises(UserError, match='optimum must be predicted first'):
    ladder.predict(rows + trained, _targets(3.2e16), 3.2e16, 8e15, place_optimum=place)


def test_the_isoflop_valley_predicts_when_chosen_and_both_laws_are_checked():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  prediction = ladder.predict(
    rows, _targets(3.2e16), budget=3.2e16, fit_below=8e15, law='isoflop_valley'
  )
  assert prediction['law'] == 'isoflop_valley'
  valley = prediction['isoflop']['valley']
  assert valley['E'] == pytest.approx(TRUE['E'], rel=1e-3)
  assert valley['kappa'] == pytest.approx(TRUE['alpha'] * TRUE['beta'] / 2, rel=0.1)
  for target in prediction['targets']:
    assert target['predicted'] == target['predicted_by_law']['isoflop_valley']
    assert set(target['predicted_by_law']) == set(ladder.LAWS)
    assert target['predicted'] == pytest.approx(_loss(target['N'], target['D']), rel=1e-3)
  # the optimum is Approach 2's N_opt at the budget, and its loss the fitted minimum there
  assert prediction['optimum'] == prediction['optimum_by_law']['isoflop_valley']
  true_n_opt = (TRUE['alpha'] * TRUE['A'] / (TRUE['beta'] * TRUE['B'])) ** (
    1 / (TRUE['alpha'] + TRUE['beta'])
  ) * (3.2e16 / 6) ** (TRUE['beta'] / (TRUE['alpha'] + TRUE['beta']))
  assert prediction['optimum']['N'] == pytest.approx(true_n_opt, rel=0.05)
  result = ladder.check(prediction, rows + _rows([3.2e16]))
  assert result['law'].startswith('isoflop_valley')
  assert set(result['mean_abs_relative_error_by_law']) == set(ladder.LAWS)
  assert (
    result['mean_abs_relative_error'] == result['mean_abs_relative_error_by_law']['isoflop_valley']
  )
  with pytest.raises(UserError, match='choose one of chinchilla, isoflop_valley'):
    ladder.predict(rows, _targets(3.2e16), 3.2e16, 8e15, law='kaplan')


def test_a_prediction_made_before_the_valley_law_still_checks():
  """Committed predictions hold Approach 3's only, without 'law' or 'predicted_by_law'."""
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  prediction = ladder.predict(rows, _targets(3.2e16), budget=3.2e16, fit_below=8e15)
  del prediction['law']
  for target in prediction['targets']:
    del target['predicted_by_law']
  result = ladder.check(prediction, rows + _rows([3.2e16]))
  assert result['law'].startswith('chinchilla')
  assert result['mean_abs_relative_error_by_law'] == {}
  assert result['mean_abs_relative_error'] < 5e-3


def test_an_optimum_that_is_one_of_the_targets_is_marked_not_added():
  rows = _rows([1e15, 2e15, 4e15, 8e15])
  targets = _targets(3.2e16)
  nearest = lambda n_opt: min(targets, key=lambda t: abs(np.log(t['N'] / n_opt)))
  prediction = ladder.predict(rows, targets, 3.2e16, 8e15, place_optimum=nearest)
  assert len(prediction['targets']) == len(targets)
  (marked,) = [t for t in prediction['targets'] if t.get('optimum')]
  assert marked['name'] == nearest(prediction['optimum']['N'])['name']
