"""Does the best learning rate transfer across depth? Loss against learning rate for 2 to 16
blocks at width 64, with and without CompleteP's residual scaling (Dey et al. 2025, alpha 1; base
depth 2), as experiments/mup_lr_transfer.py does across width.

Hypothesis: under model.depth_scaling='completep' the loss-minimising learning rate moves by at
most 2x from 2 blocks to 16; without it, it falls as the model deepens.

  python -m gptjax.sweep run experiments/completep_lr_transfer.py --root runs/completep_lr_transfer
  python experiments/completep_lr_transfer.py runs/completep_lr_transfer     # plot and summary

Setup as in experiments/mup_lr_transfer.py (byte tokenizer, 200 AdamW steps of 16 x 64 tokens, no
weight decay, no clipping, one seed per point), width 64 with 4 heads, learning rates 1e-4 * 2**k
for k = 3 .. 8, each depth's rates trained as one stack.
"""

import os
import sys

from gptjax.scaling import transfer, tuning
from gptjax.scaling.observations import read_rows

sys.path.insert(0, os.path.dirname(__file__))
import mup_lr_transfer  # noqa: E402  (the setup is that experiment's)

DEPTHS = (2, 4, 8, 16)
BASE_DEPTH = 2
LR_EXPONENTS = range(3, 9)
STEPS = 200
PANELS = ('none', 'completep')


def get_config():
  config = mup_lr_transfer.get_config()  # its setup, at one width
  config.model.update(d_model=64, d_ff=256, base_d_model=0, base_n_layers=BASE_DEPTH)
  return config


def get_runs():
  depths = [
    (f'{scaling}_L{depth}', {'model.depth_scaling': scaling, 'model.n_layers': depth})
    for depth in DEPTHS
    for scaling in ('completep', 'none')
  ]
  return tuning.expand(depths, {'train.lr': {f'lr{k}': 1e-4 * 2**k for k in LR_EXPONENTS}})


def analyse(root: str, out: str) -> dict:
  summary = transfer.summarize(
    read_rows(root), 'model.depth_scaling', PANELS, 'model.n_layers', DEPTHS
  )
  transfer.plot(
    summary,
    {'none': 'no depth scaling', 'completep': f'CompleteP (base depth {BASE_DEPTH})'},
    '{} blocks',
    f'validation loss after {STEPS} steps (nats/byte)',
    os.path.join(out, 'lr_transfer_depth.png'),
  )
  transfer.write(summary, os.path.join(out, 'summary.json'))
  return summary


if __name__ == '__main__':
  root = sys.argv[1] if len(sys.argv) > 1 else 'runs/completep_lr_transfer'
  out = os.path.join(os.path.dirname(__file__), 'results', 'completep_lr_transfer')
  print(transfer.report(analyse(root, out), PANELS, '{} blocks'))
