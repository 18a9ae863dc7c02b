"""Kaplan et al.'s L(D): one model (2 layers, d_model 64, 100K non-embedding parameters) trained on
only the first D tokens of the standard library, D from 125K to 4M (32x).

  python -m gptjax.sweep run experiments/kaplan_data_size.py --root runs/kaplan_data_size
  python -m gptjax.scaling report runs/kaplan_data_size

Every run takes the same 1,000 steps of 32 x 128 tokens (one pass over the largest D, 32 over the
smallest) and evaluates every 50 steps: as Kaplan et al. did, L(D) is the early-stopped loss, the
best evaluation (best_eval_loss), and the fit uses unique_tokens as D. About 1-1.5 hours on 2 CPU
cores.
"""

from gptjax.configs import default
from gptjax.scaling.sweep import schedule

STEPS = 1000
UNIQUE_TOKENS = (125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000)


def get_config():
  config = default.get_config()
  config.model.update(n_layers=2, d_model=64, n_heads=4, d_ff=256)
  config.sample.max_new_tokens = 0
  return config


def get_runs():
  return [
    (f'D{tokens // 1000}k', {'data.max_train_tokens': tokens, **schedule(STEPS, evaluations=20)})
    for tokens in UNIQUE_TOKENS
  ]
