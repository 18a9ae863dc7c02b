"""Kaplan et al.'s (2020) L(N) and L(C_min): 7 model sizes from 3.8K to 224K non-embedding
parameters (59x), each trained on the same 9.2M tokens (0.3 epochs of the standard library), with
early stopping.

  python -m gptjax.sweep run experiments/kaplan_model_size.py --root runs/kaplan_model_size \\
      --convention 6ND+attn+embed
  python -m gptjax.scaling report runs/kaplan_model_size --tuned

Hypothesis: the early-stopped loss falls as a power law of N, L = (N_c / N)^alpha_N (Kaplan et al.
found alpha_N = 0.076 on WebText2 with BPE), and the lower envelope of all training curves as a
power law of compute, alpha_C (0.050).

Setup: experiments/isoflop_study.py's (byte tokenizer, 2 blocks, widths 12-128, 768-token steps,
beta2 0.99, warmup over N tokens, cosine to 0.1), every size trained 12,000 steps at the 3 learning
rates of that study's grid (lr = 1e-2 * 32 / d_model x {0.5, 1, 2}) as one stack; --tuned keeps the
best of each size. Kaplan et al. fit L(N) to models that data does not limit: here the largest
model sees 42 tokens per parameter (the smallest 2,400), so expect it above the power law.
Evaluations every 600 steps on 16 batches spread over the validation split give the training
curves (best_eval_loss is the early-stopped loss) and 128 batches the final one. Where a size's
best rate is at its grid's edge, `python experiments/isoflop_study.py extend ROOT best_eval_loss`
adds the next one (d_model 12 and 24 needed it).

Measured: 23 runs, about 1.4 hours of wall time on the 2 cores (the runs' shares of their stacks,
beside other sweeps), 1.0e14 FLOPs. alpha_N = 0.113 [0.092, 0.132], alpha_C = 0.110 [0.107, 0.114]
(experiments/results/kaplan_model_size/).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402  (the setup is that study's)

STEPS = 12_000
WIDTHS = (12, 16, 24, 32, 48, 64, 96)


def get_config():
  config = isoflop_study.get_config()
  config.train.update(eval_batches=16, final_eval_batches=128)
  return config


def get_runs():
  runs = []
  for width in WIDTHS:
    runs += isoflop_study.size_runs_for_steps(f'd{width}', width, STEPS, evaluations=20)
  return runs
