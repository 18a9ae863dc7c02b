"""experiments/zero_shot_size.py's statistics against scipy and by hand, and the workdirs its
globs name."""

import json
import math

import pytest
from scipy import stats

from experiments import zero_shot_size
from gptjax.errors import UserError


def test_spearman_matches_scipy_and_its_exact_p_value_counts_orders():
  x, y = [1, 2, 3, 4, 5, 6], [0.2, 0.1, 0.4, 0.3, 0.6, 0.5]
  rho, p = zero_shot_size.spearman(x, y)
  assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
  # A perfect rise: only the identity order of 6! reaches rho = 1.
  assert zero_shot_size.spearman(x, sorted(y)) == pytest.approx((1.0, 1 / math.factorial(6)))
  assert 0 < p < 0.1


def test_mcnemar_counts_the_discordant_examples_and_tests_them_binomially():
  result = zero_shot_size.mcnemar('1111100', '1000011')
  assert (result['only_largest'], result['only_smallest']) == (4, 2)
  assert result['p_greater'] == pytest.approx(stats.binomtest(4, 6, 0.5, 'greater').pvalue)
  assert zero_shot_size.mcnemar('101', '101')['p_greater'] == 1.0


def test_a_glob_names_the_workdirs_among_its_matches_and_a_path_must_be_one(tmp_path):
  for name in ('d32', 'd64', '_shared', '_xla_cache'):
    (tmp_path / name).mkdir()
  for name in ('d32', 'd64'):
    (tmp_path / name / 'config.json').write_text(json.dumps({}))
  assert zero_shot_size.expand([str(tmp_path / '*')]) == [str(tmp_path / n) for n in ('d32', 'd64')]
  assert zero_shot_size.expand([str(tmp_path / 'd64'), str(tmp_path / 'd*')]) == [
    str(tmp_path / 'd64'),
    str(tmp_path / 'd32'),
  ]
  with pytest.raises(UserError, match='not a pre-training workdir'):
    zero_shot_size.expand([str(tmp_path / '_shared')])
  with pytest.raises(UserError, match='matches no pre-training workdir'):
    zero_shot_size.expand([str(tmp_path / '_*')])
