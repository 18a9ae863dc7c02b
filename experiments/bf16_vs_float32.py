"""Does bfloat16 train like float32 here? The same runs in model.dtype float32 and bfloat16
(products' operands in bfloat16, accumulation and everything between them float32), 3 seeds
each, at two widths of experiments/mup_lr_transfer.py (its standard-parametrization setup and
learning rate 2.4e-3, the d_model 128 optimum).

Hypothesis: bfloat16's final validation loss is within the seed noise of float32's, and its
train steps are faster at d_model 256, where the products are large enough for AMX.

  python -m gptjax.sweep run experiments/bf16_vs_float32.py --root runs/bf16_vs_float32
  python experiments/bf16_vs_float32.py runs/bf16_vs_float32

Speed: each (dtype, width) trains its 3 seeds as one stack, and the sweep prints the stack's
train-step seconds; compare those (the tokens/s the rows of this first run recorded were computed
wrongly by the stacked trainer, since fixed).
"""

import json
import os
import statistics
import sys

from gptjax.scaling import tuning
from gptjax.scaling.observations import read_rows

sys.path.insert(0, os.path.dirname(__file__))
import mup_lr_transfer  # noqa: E402  (the setup is that experiment's)

WIDTHS = (128, 256)
SEEDS = 3


def get_config():
  config = mup_lr_transfer.get_config()
  config.train.lr = 1e-4 * 2**4.6  # 2.4e-3
  return config


def get_runs():
  runs = [
    (f'{dtype}_d{width}', {'model.dtype': dtype, 'model.d_model': width, 'model.d_ff': 4 * width})
    for width in WIDTHS
    for dtype in ('float32', 'bfloat16')
  ]
  return tuning.with_seeds(runs, SEEDS)


def summarize(root: str) -> dict:
  rows = read_rows(root)  # the latest row of each run
  summary = {}
  for width in WIDTHS:
    for dtype in ('float32', 'bfloat16'):
      group = [
        row
        for row in rows
        if row['config']['model']['dtype'] == dtype and row['config']['model']['d_model'] == width
      ]
      losses = [row['eval_loss'] for row in group if row['eval_loss'] is not None]
      if len(losses) < 2:
        continue
      summary[f'{dtype}_d{width}'] = {
        'eval_loss_mean': statistics.mean(losses),
        'eval_loss_std': statistics.stdev(losses),
        'seeds': len(losses),
      }
  by_name = {row['name']: row for row in rows}
  for width in WIDTHS:  # the same seed: the same initialisation and batches in both dtypes
    pairs = [
      (by_name.get(f'float32_d{width}{suffix}'), by_name.get(f'bfloat16_d{width}{suffix}'))
      for suffix in [''] + [f'_seed{k}' for k in range(1, SEEDS)]
    ]
    differences = [b['eval_loss'] - a['eval_loss'] for a, b in pairs if a and b]
    if len(differences) > 1:
      summary[f'bfloat16_minus_float32_d{width}'] = {
        'mean': statistics.mean(differences),
        'std': statistics.stdev(differences),
        'pairs': len(differences),
      }
  return summary


if __name__ == '__main__':
  result = summarize(sys.argv[1] if len(sys.argv) > 1 else 'runs/bf16_vs_float32')
  out = os.path.join(os.path.dirname(__file__), 'results', 'bf16_vs_float32.json')
  with open(out, 'w') as f:
    json.dump(result, f, indent=1)
  for name, numbers in result.items():
    if name.startswith('bfloat16_minus'):
      print(f'{name}: {numbers["mean"]:+.4f} +- {numbers["std"]:.4f} over {numbers["pairs"]} seeds')
      continue
    print(
      f'{name}: eval loss {numbers["eval_loss_mean"]:.4f} +- {numbers["eval_loss_std"]:.4f} '
      f'({numbers["seeds"]} seeds)'
    )
