"""A demo of the scaling-law machinery end to end, about 10 minutes on 2 CPU cores: one-layer models
(d_model 16 to 64, 8-wide heads) on the first 400 files of the standard library, byte tokenizer,
1,024 tokens a step.

  python -m gptjax.sweep run experiments/demo_sweep.py --root runs/demo_sweep
  python -m gptjax.scaling report runs/demo_sweep --out experiments/results/demo_sweep
  python -m gptjax.scaling holdout runs/demo_sweep --hold_out largest

Three series in one sweep, so every law in the report has points:
  size_*  4 model sizes on the same 205K tokens                    (kaplan_n)
  data_*  one model on 4K, 16K and 64K unique tokens, 300 steps    (kaplan_d)
  iso_*   3 compute budgets x 4 sizes each, D = C / (6N)           (isoflop, chinchilla)
The sizes of each budget are picked by hand around where these tiny models do best (about 100
tokens per parameter); the real sweeps use accounting.propose_shape. The runs are far too small and
short for their fits to say anything about scaling.
"""

from gptjax import configuration
from gptjax.configs import default
from gptjax.models import accounting
from gptjax.scaling.sweep import schedule

SIZE_SERIES = (16, 24, 32, 48)  # d_model
SIZE_STEPS = 200
DATA_D_MODEL = 48
UNIQUE_TOKENS = (4_000, 16_000, 64_000)
DATA_STEPS = 300
BUDGETS = {3e10: (16, 24, 32, 48), 9e10: (24, 32, 48, 64), 2.7e11: (32, 40, 48, 64)}


def get_config():
  config = default.get_config()
  config.model.update(n_layers=1, n_ctx=64)
  config.tokenizer.kind = 'byte'
  config.data.max_documents = 400
  config.train.update(seq_len=64, global_batch_size=16, lr=3e-3)
  config.sample.max_new_tokens = 0
  return config


def _model(d_model: int) -> dict:
  return {'model.d_model': d_model, 'model.n_heads': d_model // 8, 'model.d_ff': 4 * d_model}


def get_runs():
  base = get_config()
  runs = [(f'size_d{d}', {**_model(d), **schedule(SIZE_STEPS)}) for d in SIZE_SERIES]
  runs += [
    (
      f'data_{tokens // 1000}k',
      {
        **_model(DATA_D_MODEL),
        'data.max_train_tokens': tokens,
        **schedule(DATA_STEPS, evaluations=10),
      },
    )
    for tokens in UNIQUE_TOKENS
  ]
  for budget, widths in BUDGETS.items():
    for d_model in widths:
      config = base.copy_and_resolve_references()
      config.model.update(d_model=d_model, n_heads=d_model // 8, d_ff=4 * d_model)
      n = accounting.count_params(configuration.model_config(config, 262)).non_embedding
      (run,) = accounting.runs_for_budget(
        budget, [n], base.train.global_batch_size, base.train.seq_len
      )
      runs.append(
        (
          f'iso_{budget:.1e}_d{d_model}'.replace('+', ''),
          {**_model(d_model), **schedule(run.steps)},
        )
      )
  return runs
