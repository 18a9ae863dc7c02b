"""Models with a 512-token context, for in-context learning (Olsson et al. 2022) and GPT-3's
few-shot claim in miniature: 2-block models of d_model 32, 64 and 128, and a 1-block d_model 64
model as the control that cannot compose two attention layers (an induction head needs two).

  python -m gptjax.sweep run experiments/icl_models.py --root runs/icl_models \\
      --convention 6ND+attn+embed
  python -m experiments.icl_score 'runs/icl_models/*' --early 50 --late 500 \\
      --out experiments/results/icl_score
  python -m experiments.few_shot 'runs/icl_models/*' --shots 0,1,2,4,8 \\
      --tasks stdlib_rename_initials,stdlib_rename_camel,stdlib_rename_reversed,stdlib_rename_upper

Hypotheses: (a) the two-block models' ICL score (loss at position 500 minus at 50) falls
suddenly at some point in training (the induction-head phase change) and ends more negative the
larger the model; the one-block control's stays smaller in size. (b) On the stdlib_rename_* tasks,
whose demonstrations alone say which renaming is asked for, accuracy rises with the number of
demonstrations k, more for the larger models.

Setup: experiments/isoflop_study.py's (byte tokenizer, 4d_model MLP, beta2 0.99, warmup and
cosine schedule), with windows of 512 bytes, 8 per step (4,096 tokens), 2,000 steps (8.2M
tokens, under one epoch of the standard library's training split), in bfloat16 (the products;
it trains like float32, README "Speed", and is 1.4x faster here). One learning rate per size,
the isoFLOP study's rule lr = 1e-2 * 32 / d_model (its grid's middle, which was best or within
one grid step of the best for long runs): these models are for the ICL measurements, not a
scaling fit, so they are not tuned further. A checkpoint every 100 steps, all kept, gives the
score against training tokens.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402  (the setup is that study's)

SEQ_LEN, BATCH, STEPS = 512, 8, 2_000
MODELS = {'L2_d32': (2, 32), 'L2_d64': (2, 64), 'L2_d128': (2, 128), 'L1_d64': (1, 64)}


def get_config():
  config = isoflop_study.get_config()
  config.model.update(n_ctx=SEQ_LEN, dtype='bfloat16')
  config.train.update(
    seq_len=SEQ_LEN,
    global_batch_size=BATCH,
    steps=STEPS,
    eval_every=250,
    eval_batches=16,
    final_eval_batches=64,
    checkpoint_every=100,
    keep_checkpoints=STEPS // 100,
    log_every=50,
    warmup_steps=100,
  )
  return config


def get_runs():
  return [
    (
      name,
      {
        **isoflop_study.shape(width),
        'model.n_layers': layers,
        'train.lr': 1e-2 * 32 / width,
      },
    )
    for name, (layers, width) in MODELS.items()
  ]
