"""Kaplan et al.'s L(N): 7 model sizes from 12K to 450K non-embedding parameters (37x), each
trained on the same 4.1M tokens of the standard library (1,000 steps of 32 x 128).

  python -m gptjax.sweep run experiments/kaplan_model_size.py --root runs/kaplan_model_size
  python -m gptjax.scaling report runs/kaplan_model_size

Kaplan et al. fit L(N) to models that data does not limit. Here the largest model sees about 9
tokens per parameter, so expect its point to sit above a pure power law; the report also fits L(C)
to the envelope of the training curves. About 1-1.5 hours on 2 CPU cores.
"""

from gptjax.configs import default
from gptjax.models.accounting import propose_shape
from gptjax.scaling.sweep import schedule

STEPS = 1000
TARGET_N = (12e3, 27e3, 50e3, 100e3, 155e3, 230e3, 450e3)


def get_config():
  config = default.get_config()
  config.sample.max_new_tokens = 0
  return config


def get_runs():
  runs = []
  for target in TARGET_N:
    shape = propose_shape(target)
    runs.append(
      (
        f'L{shape.n_layers}_d{shape.d_model}',
        {
          'model.n_layers': shape.n_layers,
          'model.d_model': shape.d_model,
          'model.n_heads': shape.n_heads,
          'model.d_ff': shape.d_ff,
          **schedule(STEPS),
        },
      )
    )
  return runs
