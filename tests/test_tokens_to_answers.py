"""The accuracy-from-loss map of experiments/tokens_to_answers.py: it recovers a known logistic
curve from binomial counts, its bootstrap interval covers the truth, and a missing prediction is
a clear error."""

import numpy as np
import pytest

from experiments import tokens_to_answers as t2a

CHANCE, K, LOSS0 = 0.25, 6.0, 1.6


def _counts(seed: int = 0, n: int = 300):
  rng = np.random.default_rng(seed)
  loss_R = np.linspace(1.4, 2.0, 25)
  correct_R = rng.binomial(n, t2a.accuracy_at(loss_R, K, LOSS0, CHANCE))
  return loss_R, correct_R, np.full_like(loss_R, n)


def test_the_map_runs_from_chance_to_one_as_the_loss_falls():
  assert t2a.accuracy_at(100.0, K, LOSS0, CHANCE) == pytest.approx(CHANCE)
  assert t2a.accuracy_at(-100.0, K, LOSS0, CHANCE) == pytest.approx(1.0)
  assert t2a.accuracy_at(LOSS0, K, LOSS0, CHANCE) == pytest.approx((1 + CHANCE) / 2)


def test_the_fit_recovers_a_known_curve_and_its_interval_covers_it():
  loss_R, correct_R, n_R = _counts()
  k, loss0 = t2a.fit_map(loss_R, correct_R, n_R, CHANCE)
  assert k == pytest.approx(K, rel=0.15)
  assert loss0 == pytest.approx(LOSS0, abs=0.02)
  bootstrap = t2a.bootstrap_maps(loss_R, correct_R, n_R, CHANCE)
  predicted = t2a.predict_accuracy(1.5, (k, loss0), bootstrap, CHANCE)
  low, high = predicted['interval']
  assert low < t2a.accuracy_at(1.5, K, LOSS0, CHANCE) < high < low + 0.1
  assert low < predicted['accuracy'] < high


def test_check_without_a_prediction_is_a_clear_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    t2a.main(['check', '--out', str(tmp_path)])
  assert exit_info.value.code != 0
  assert 'prediction.json' in capsys.readouterr().err


def test_predict_never_overwrites_a_prediction(tmp_path, capsys):
  (tmp_path / 'prediction.json').write_text('{"committed": true}')
  with pytest.raises(SystemExit) as exit_info:
    t2a.main(['predict', '--out', str(tmp_path)])
  assert exit_info.value.code != 0
  assert 'exists already' in capsys.readouterr().err
  assert (tmp_path / 'prediction.json').read_text() == '{"committed": true}'
