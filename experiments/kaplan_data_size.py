"""Kaplan et al.'s (2020) L(D): one model (2 blocks, d_model 48, 55K non-embedding parameters)
trained on only D tokens of the standard library, D from 125K to 8M (64x), with early stopping.

  python -m gptjax.sweep run experiments/kaplan_data_size.py --root runs/kaplan_data_size \\
      --convention 6ND+attn+embed
  python -m gptjax.scaling report runs/kaplan_data_size --tuned

Hypothesis: the early-stopped loss falls as a power law of the data, L = (D_c / D)^alpha_D (Kaplan
et al.: alpha_D = 0.095).

Setup: experiments/isoflop_study.py's, every run 10,000 steps of 768 tokens (7.7M tokens: 61
passes over the smallest D, under one over the largest) at the study's 3 learning rates; an
evaluation every 250 steps on 16 batches spread over the validation split; L(D) is the best of
them (best_eval_loss), and the fit uses unique_tokens as D. The D tokens are 4K-token pieces
spread evenly over the training split (data.train_subset='spread'), as Kaplan et al. took random
subsets of WebText2: the split's documents are in path order, so its first D tokens are a few
modules. The first version of this sweep trained on the first D tokens
(experiments/results/kaplan_data_size_first/, the same runs with train_subset 'first').

Measured: 24 runs with the 3 grid extensions, about 1.4 hours of wall time on the 2 cores (its
stacks' wall times, beside other sweeps), 9.7e13 FLOPs; every size's optimum inside its LR grid.
alpha_D = 0.092 [0.045, 0.132], but the points are not one power law: the loss falls steeply up
to 1M tokens and is flat beyond, at the 57K-parameter model's own limit
(experiments/results/kaplan_data_size/). The first-D version: alpha_D = 0.130 [0.087, 0.176],
on points that are not a power law either (experiments/results/kaplan_data_size_first/).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402  (the setup is that study's)

STEPS = 10_000
WIDTH = 48
UNIQUE_TOKENS = (125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000)


def get_config():
  config = isoflop_study.get_config()
  config.train.update(eval_batches=16, final_eval_batches=128)
  config.data.train_subset = 'spread'
  return config


def get_runs():
  runs = []
  for tokens in UNIQUE_TOKENS:
    for name, overrides in isoflop_study.size_runs_for_steps(
      f'D{tokens // 1000}k', WIDTH, STEPS, evaluations=40
    ):
      runs.append((name, {**overrides, 'data.max_train_tokens': tokens}))
  return runs
