"""The first isoFLOP study run here, kept as the untuned example: 4 compute budgets from 1e11 to
8e11 FLOPs (C = 6ND) x 5 model sizes each, D = C / (6N), one learning rate for every size. The
smallest model won at every budget, so it gave no law (experiments/results/chinchilla_isoflop/).
experiments/isoflop_study.py replaces it, and experiments/porian_ablation.py's arm (ii) re-runs
its one-learning-rate choice on that study's setup.

  python -m gptjax.sweep run experiments/chinchilla_isoflop.py --root runs/chinchilla_isoflop
  python -m gptjax.scaling report runs/chinchilla_isoflop

The sizes of a budget are 1/4, 1/2, 1, 2 and 4 times sqrt(C / 60), the N that would see 10 tokens
per parameter, so the optimum (20 tokens per parameter in Chinchilla) lies well inside them. Each
run's cosine schedule ends at its own last step.

The vocabulary is 1,024 tokens rather than the default 4,096: at d_model 32-128 the logits would
otherwise take most of every step's time (6 * vocab * d_model FLOPs per token, which C = 6ND leaves
out, as Kaplan et al. and Hoffmann et al. do).
"""

import math

from gptjax import configuration
from gptjax.configs import default
from gptjax.models import accounting
from gptjax.scaling.sweep import schedule

BUDGETS = (1e11, 2e11, 4e11, 8e11)
SIZE_FACTORS = (0.25, 0.5, 1, 2, 4)
TOKENS_PER_PARAMETER = 10  # the middle size of each budget


def get_config():
  config = default.get_config()
  config.tokenizer.vocab_size = 1024
  config.train.global_batch_size = 16  # 2,048 tokens a step: even the shortest runs take 50 steps
  config.sample.max_new_tokens = 0
  return config


def get_runs():
  base = get_config()
  runs = []
  for budget in BUDGETS:
    middle = math.sqrt(budget / (6 * TOKENS_PER_PARAMETER))
    for factor in SIZE_FACTORS:
      shape = accounting.propose_shape(factor * middle)
      model = {
        'model.n_layers': shape.n_layers,
        'model.d_model': shape.d_model,
        'model.n_heads': shape.n_heads,
        'model.d_ff': shape.d_ff,
      }
      config = base.copy_and_resolve_references()
      config.model.update({k.split('.')[1]: v for k, v in model.items()})
      n = accounting.count_params(
        configuration.model_config(config, config.tokenizer.vocab_size)
      ).non_embedding
      (run,) = accounting.runs_for_budget(
        budget, [n], base.train.global_batch_size, base.train.seq_len
      )
      runs.append(
        (
          f'C{budget:.1e}_L{shape.n_layers}_d{shape.d_model}'.replace('+', ''),
          {**model, **schedule(run.steps)},
        )
      )
  return runs
