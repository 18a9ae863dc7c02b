"""Transfer curves (gptjax/scaling/transfer.py) on rows whose optima are known."""

import math

import pytest

from gptjax.scaling import transfer


def _rows():
  rows = []
  for parametrization, best_of in (('sp', lambda w: 1e-2 * 32 / w), ('mup', lambda w: 1e-2)):
    for width in (32, 128, 512):
      for k in range(9):
        lr = 1e-2 * 2 ** (k - 6.2)
        loss = 3.0 + 0.1 * (math.log2(lr) - math.log2(best_of(width))) ** 2
        config = {
          'model': {'parametrization': parametrization, 'd_model': width},
          'train': {'lr': lr},
        }
        rows.append(
          {
            'name': f'{parametrization}_{width}_{k}',
            'N': width**2,
            'eval_loss': loss,
            'config': config,
          }
        )
  rows[-1]['eval_loss'] = None  # a diverged run
  return rows


def test_summary_finds_each_curves_optimum_and_how_far_it_moves(tmp_path):
  summary = transfer.summarize(
    _rows(), 'model.parametrization', ('sp', 'mup'), 'model.d_model', (32, 128, 512)
  )
  assert summary['mup'][512]['diverged'] == ['mup_512_8']
  assert summary['mup_best_lr_spread'] == pytest.approx(1.0, abs=0.02)
  assert summary['sp_best_lr_spread'] == pytest.approx(16.0, rel=0.1)
  assert summary['sp_lr_vs_n']['exponent'] == pytest.approx(-0.5, abs=0.05)  # lr ~ 1/width
  text = transfer.report(summary, ('sp', 'mup'), 'd_model {}')
  assert 'sp: best lr moves' in text and 'mup d_model 512: best lr' in text
  transfer.plot(
    summary, {'sp': 'sp', 'mup': 'mup'}, 'd_model {}', 'loss', str(tmp_path / 'curves.png')
  )
  assert (tmp_path / 'curves.png').stat().st_size > 10_000
