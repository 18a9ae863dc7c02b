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

import json
import os
import sys

from gptjax.configs import default
from gptjax.scaling import tuning

DEPTHS = (2, 4, 8, 16)
BASE_DEPTH = 2
LR_EXPONENTS = range(3, 9)
STEPS = 200


def get_config():
  config = default.get_config()
  config.model.update(n_layers=2, n_heads=4, d_model=64, d_ff=256, n_ctx=64)
  config.model.base_n_layers = BASE_DEPTH
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
  depths = [
    (f'{scaling}_L{depth}', {'model.depth_scaling': scaling, 'model.n_layers': depth})
    for depth in DEPTHS
    for scaling in ('completep', 'none')
  ]
  return tuning.expand(depths, {'train.lr': {f'lr{k}': 1e-4 * 2**k for k in LR_EXPONENTS}})


def analyse(root: str, out: str) -> dict:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = [json.loads(line) for line in open(os.path.join(root, 'results.jsonl'))]
  latest = list({row['name']: row for row in rows}.values())
  summary = {}
  figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for axis, scaling in zip(axes, ('none', 'completep')):
    curves = {}
    for depth in DEPTHS:
      runs = sorted(
        (
          row
          for row in latest
          if row['config']['model']['depth_scaling'] == scaling
          and row['config']['model']['n_layers'] == depth
        ),
        key=lambda row: row['config']['train']['lr'],
      )
      if not runs:
        continue
      lrs = [row['config']['train']['lr'] for row in runs]
      losses = [row['eval_loss'] for row in runs]
      best = tuning.optimum(lrs, losses, [row['name'] for row in runs])
      curves[depth] = {
        'lrs': lrs,
        'eval_losses': losses,
        'best_lr': best.value,
        'best_loss': best.loss,
        'best_at_grid_edge': best.at_edge,
      }
      finite = [(lr, loss) for lr, loss in zip(lrs, losses) if loss is not None]
      axis.plot(*zip(*finite), marker='o', label=f'{depth} blocks')
      axis.plot(best.value, best.loss, marker='*', color='black', markersize=9)
    summary[scaling] = curves
    best_lrs = [c['best_lr'] for c in curves.values()]
    if len(best_lrs) > 1:
      summary[f'{scaling}_best_lr_spread'] = max(best_lrs) / min(best_lrs)
    axis.set_xscale('log', base=2)
    axis.set_xlabel('peak learning rate')
    title = {'none': 'no depth scaling', 'completep': f'CompleteP (base depth {BASE_DEPTH})'}
    axis.set_title(title[scaling])
    axis.grid(alpha=0.3)
  axes[0].set_ylabel(f'validation loss after {STEPS} steps (nats/byte)')
  axes[1].legend()
  figure.tight_layout()
  os.makedirs(out, exist_ok=True)
  figure.savefig(os.path.join(out, 'lr_transfer_depth.png'), dpi=120)
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


if __name__ == '__main__':
  root = sys.argv[1] if len(sys.argv) > 1 else 'runs/completep_lr_transfer'
  out = os.path.join(os.path.dirname(__file__), 'results', 'completep_lr_transfer')
  result = analyse(root, out)
  for scaling in ('none', 'completep'):
    for depth, curve in result[scaling].items():
      edge = ' (at the grid edge)' if curve['best_at_grid_edge'] else ''
      print(
        f'{scaling} {depth} blocks: best lr {curve["best_lr"]:.2e}{edge}, '
        f'loss {curve["best_loss"]:.4f}'
      )
    if f'{scaling}_best_lr_spread' in result:
      print(f'{scaling}: best lr moves {result[f"{scaling}_best_lr_spread"]:.1f}x across depths')
