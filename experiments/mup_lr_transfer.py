"""Does the best learning rate transfer across width? Loss against learning rate for widths 32 to
512 (a 16x range), under the standard parametrization and under muP (base width 32), the way
Yang et al. (2021, Figure 1) show it.

Hypothesis: under model.parametrization='mup' the loss-minimising learning rate moves by at most
2x from width 32 to 512; under 'sp' it falls as the model widens.

  python -m gptjax.sweep run experiments/mup_lr_transfer.py --root runs/mup_lr_transfer
  python experiments/mup_lr_transfer.py runs/mup_lr_transfer      # plot and summary

Setup: GPT-2-style pre-LN models, 2 blocks, 4 heads (head width grows with the model), byte
tokenizer, the first 1,000 files of the standard library; 200 AdamW steps of 16 x 64 tokens,
warmup 20 steps, cosine to 0.1; no weight decay and no gradient clipping, so the learning rate is
the only optimizer setting that acts. One seed per point. The learning rates are powers of 2
times 1e-4; every (width, parametrization) trains its 7 rates as one stack (gptjax/training/
stacked.py). The optimum of each curve is tuning.optimum's: the vertex of a parabola through the
best point and its neighbours in log(lr), flagged when the best point sits at the grid's edge.
The summary also fits the optimum against N (tuning.fit_hyperparameter_law): the tuning
workflow a scaling study runs at every size.
"""

import os
import sys

from gptjax.configs import default
from gptjax.scaling import transfer, tuning
from gptjax.scaling.observations import read_rows

WIDTHS = (32, 64, 128, 256, 512)
BASE_WIDTH = 32
LR_EXPONENTS = range(2, 9)  # lr = 1e-4 * 2**k: 4e-4 .. 2.56e-2
STEPS = 200
PANELS = ('sp', 'mup')


def get_config():
  config = default.get_config()
  config.model.update(n_layers=2, n_heads=4, n_ctx=64, base_d_model=BASE_WIDTH)
  config.tokenizer.kind = 'byte'
  config.data.max_documents = 1000
  config.train.update(
    seq_len=64,
    global_batch_size=16,
    steps=STEPS,
    warmup_steps=20,
    weight_decay=0.0,
    grad_clip=0.0,
    log_every=25,
    eval_every=STEPS,
    eval_batches=16,
    checkpoint_every=100,
    keep_checkpoints=2,
  )
  config.sample.max_new_tokens = 0
  return config


def get_runs():
  sizes = [
    (
      f'{parametrization}_d{width}',
      {'model.parametrization': parametrization, 'model.d_model': width, 'model.d_ff': 4 * width},
    )
    for width in WIDTHS
    for parametrization in ('mup', 'sp')
  ]
  return tuning.expand(sizes, {'train.lr': {f'lr{k}': 1e-4 * 2**k for k in LR_EXPONENTS}})


def analyse(root: str, out: str) -> dict:
  summary = transfer.summarize(
    read_rows(root), 'model.parametrization', PANELS, 'model.d_model', WIDTHS
  )
  transfer.plot(
    summary,
    {'sp': 'standard parametrization', 'mup': f'muP (base width {BASE_WIDTH})'},
    'd_model {}',
    f'validation loss after {STEPS} steps (nats/byte)',
    os.path.join(out, 'lr_transfer.png'),
  )
  transfer.write(summary, os.path.join(out, 'summary.json'))
  return summary


if __name__ == '__main__':
  root = sys.argv[1] if len(sys.argv) > 1 else 'runs/mup_lr_transfer'
  result = analyse(root, os.path.join(os.path.dirname(__file__), 'results', 'mup_lr_transfer'))
  print(transfer.report(result, PANELS, 'd_model {}'))
