"""Chinchilla's isoFLOP study (Hoffmann et al. 2022, Approaches 2 and 3) on a tuned frontier, and
its ladder checks: 7 compute budgets from 2.5e11 to 1.6e13 FLOPs (64x), 5 to 7 model sizes per
budget, 3 learning rates (or more, where the best was at the edge) per (size, budget).

  S="python -m gptjax.sweep run experiments/isoflop_study.py --root runs/isoflop_study \
     --convention 6ND+attn+embed"
  $S --only '^C(2.5e11|5.0e11|1.0e12|2.0e12)_'           # every budget but the largest
  python experiments/isoflop_study.py extend runs/isoflop_study  # grid edges: add the next LR
  $S --only '^C(2.5e11|5.0e11|1.0e12|2.0e12)_'           # ... and train those (repeat)
  python experiments/isoflop_study.py predict runs/isoflop_study # commit this before ...
  $S                                                     # ... the largest budget's runs
  python experiments/isoflop_study.py check runs/isoflop_study   # ladder_check.json
  python experiments/isoflop_study.py report runs/isoflop_study  # report, card, plots

Hypothesis: with every (N, D) at its tuned learning rate and C counting the head, the isoFLOP
minima lie inside each budget's sizes and N_opt grows as C^a with a near Chinchilla's 0.5; a law
fitted on the budgets up to 2e12 predicts the 4e12 and 8e12 runs' losses within 1% (Approach 3:
missed); the isoFLOP valley fitted up to 4e12 predicts the 1.6e13 runs' within 1% (met: 0.37%).

Conventions.
- C counts every matmul of a training step (6ND+attn+embed: the blocks' 6N, the attention
  scores, and the embedding and head matmuls, 12 * vocab * d_model per token), as Porian et al.
  (2024) showed one must at this scale: at d_model 32 the head is 40% of the step.
- N is the parameters that C counts, N_compute = C / (6D) (results rows give it), so C = 6ND holds
  exactly and Approach 2's exponents of N and D add to 1.
- The tokenizer is bytes (262 ids): a 4,096-token BPE would make the embedding most of every
  model here (12 * 4096 * 32 FLOPs a token against 6N = 150k at d_model 32).
- D is tokens trained on, one epoch or less of the ~31M-byte standard library.

Models: GPT-2 pre-LN, 2 blocks, widths 12-128 in steps of about sqrt(2), d_ff = 4 d_model,
n_heads = max(2, d_model / 16), 64-token windows, 12 windows (768 tokens) a step.

Hyperparameter policy (issue 16's tools): each (size, budget) tries lr = base(d) x {0.5, 1, 2},
base(d) = 1e-2 * 32 / d_model (the standard parametrization's optimum falls about as 1 / width:
experiments/results/mup_lr_transfer); the report takes the best of each (N, D) (the tuned frontier)
and flags a best LR at the edge of its 3. Warmup over N tokens (tuning.porian_warmup_steps), then a
cosine to 0.1 x lr at the run's own last step (the warmup capped at a fifth of the run: the largest
models of a budget see as few as 3 tokens per parameter). AdamW beta2 = 0.99: at 768 tokens a step,
0.95 is too short a memory (Porian et al. found small batches need beta2 of 0.99-0.999); the token
half-life rule (tuning.beta2_for_batch) would give 0.99992, longer than the shortest runs. Weight
decay 0.1, gradient clipping at 1, float32 (bfloat16 gains nothing at these widths).

Evaluation: once, after the last step, on 128 batches (98k tokens, a sixth of the validation
split) spread evenly over it; rows carry the standard error of that mean (eval_loss_se).
Runs of one shape train as one stack whatever their budget (gptjax/training/stacked.py).

Measured: 150 runs (with the grid extensions, the predicted optima and the seeds), about 6.7 hours
of wall time on the 2 cores (the sum of the runs' shares of their stacks; other sweeps ran beside
it most of the time; the 1.6e13 budget's 15 runs 3.0 hours), 6.0e14 FLOPs in all.
"""

import dataclasses
import json
import math
import os
import shutil
import sys

import numpy as np

from gptjax import configuration
from gptjax.configs import default
from gptjax.models import accounting
from gptjax.scaling import ladder, tuning
from gptjax.scaling.observations import read_rows

CONVENTION = '6ND+attn+embed'
BUDGETS = (2.5e11, 5e11, 1e12, 2e12, 4e12, 8e12, 1.6e13)


@dataclasses.dataclass(frozen=True)
class Ladder:
  """Budgets predicted, before they were trained, by `law` fitted to the budgets <= fit_below."""

  fit_below: float
  budgets: tuple[float, ...]
  law: str


# The first ladder (Approach 3, committed in 4b90d01) missed its 1% target at 4e12 and 8e12; the
# second, 4x beyond the budgets it fits, uses the isoFLOP valley, chosen after the first missed
# (ladder_retrodiction.json has how each law would have done on the first).
LADDERS = (Ladder(2e12, (4e12, 8e12), 'chinchilla'), Ladder(4e12, (1.6e13,), 'isoflop_valley'))
LADDER_BUDGETS = tuple(budget for rung in LADDERS for budget in rung.budgets)
FIT_BELOW = LADDERS[0].fit_below  # the Porian ablation's budgets
WIDTHS = (12, 16, 24, 32, 48, 64, 96, 128)
# Each budget's 6 widths, placed so that the pilot's optima (d_model 32 at 1e12, 48 at 4e12) and
# Chinchilla's N ~ C^0.5 from them fall inside.
BUDGET_WIDTHS = {
  2.5e11: (12, 16, 24, 32, 48, 64),
  5e11: (12, 16, 24, 32, 48, 64),
  1e12: (16, 24, 32, 48, 64, 96),
  2e12: (16, 24, 32, 48, 64, 96),
  4e12: (24, 32, 48, 64, 96, 128),
  8e12: (32, 48, 64, 96, 128, 192),  # d24 would need 37M tokens: more than one epoch
  1.6e13: (48, 64, 96, 128, 192),  # d48 needs 30.3M of the 31.0M tokens
}
LR_FACTORS = {'lrx0.5': 0.5, 'lrx1': 1.0, 'lrx2': 2.0}
BATCH, SEQ_LEN = 12, 64


def get_config():
  config = default.get_config()
  config.model.update(n_layers=2, n_ctx=SEQ_LEN)
  config.tokenizer.kind = 'byte'
  config.train.update(
    seq_len=SEQ_LEN,
    global_batch_size=BATCH,
    b2=0.99,
    eval_batches=128,
    final_eval_batches=128,
    keep_checkpoints=1,
  )
  config.sample.max_new_tokens = 0
  return config


def shape(width: int) -> dict:
  return {
    'model.d_model': width,
    'model.d_ff': 4 * width,
    'model.n_heads': max(2, width // 16),
  }


def compute_per_token(width: int, convention: str = CONVENTION) -> float:
  """Training FLOPs per token of the width's model, counted by `convention`."""
  config = get_config()
  config.model.update({k.split('.')[1]: v for k, v in shape(width).items()})
  model = configuration.model_config(config, 262)
  return accounting.training_compute(model, 1, SEQ_LEN, convention)


def budget_name(budget: float) -> str:
  return f'C{budget:.1e}'.replace('+', '')


RESULTS = os.path.join(os.path.dirname(__file__), 'results', 'isoflop_study')
EXTENSIONS = os.path.join(RESULTS, 'lr_extensions.json')


def prediction_path(budget: float, kind: str = 'prediction') -> str:
  """The committed prediction (or check) of a ladder budget."""
  return os.path.join(RESULTS, f'ladder_{kind}_{budget_name(budget)}.json')


# Repeated under 3 seeds: the noise the ladder's errors are read against.
SEED_RUN = 'C1.0e12_d32_lrx1'


def size_runs(budget: float, width: int, label: str = '') -> list:
  """The runs of one (size, budget), one per learning rate."""
  steps = max(1, round(budget / compute_per_token(width) / (BATCH * SEQ_LEN)))
  return size_runs_for_steps(f'{budget_name(budget)}_{label}d{width}', width, steps)


def size_runs_for_steps(name: str, width: int, steps: int, evaluations: int = 1) -> list:
  """Runs of `steps` steps at one width, one per learning rate of the grid (and of its
  extension, where the best rate was at the grid's edge), evaluated `evaluations` times and
  checkpointed 8 times."""
  every = max(1, math.ceil(steps / 8))
  base_lr = 1e-2 * 32 / width
  overrides = {
    **shape(width),
    'train.steps': steps,
    'train.warmup_steps': min(
      tuning.porian_warmup_steps(round(compute_per_token(width) / 6), BATCH * SEQ_LEN), steps // 5
    ),
    'train.eval_every': max(1, math.ceil(steps / evaluations)),
    'train.checkpoint_every': every,
    'train.log_every': max(1, min(50, every)),
  }
  factors = {**LR_FACTORS, **{f'lrx{f:g}': f for f in lr_extensions().get(name, [])}}
  grid = {
    'train.lr': {
      label: factor * base_lr for label, factor in sorted(factors.items(), key=lambda kv: kv[1])
    }
  }
  return tuning.expand([(name, overrides)], grid)


def lr_extensions() -> dict[str, list[float]]:
  """{(size, budget) name: the LR factors added beyond the grid}, as `extend` wrote them."""
  if not os.path.exists(EXTENSIONS):
    return {}
  with open(EXTENSIONS) as f:
    return json.load(f)


def extend(root: str, loss_col: str = 'eval_loss') -> dict[str, list[float]]:
  """Adds, for every (size, budget) whose best learning rate by loss_col is at its grid's edge,
  the next factor of 2 beyond it, to EXTENSIONS (the next sweep run trains them). Run again after
  those runs: an edge that moved extends again. The Kaplan sweeps (their runs are named by size or
  data size) extend by best_eval_loss."""
  extensions = lr_extensions()
  _, found = tuning.tuned_frontier(read_rows(root), 'train.lr', loss_col)
  for curve, best in found:
    if not best.at_edge:
      continue
    key = best.best_run.rsplit('_lr', 1)[0]
    factors = sorted([*LR_FACTORS.values(), *extensions.get(key, [])])
    factor = float(best.best_run.rsplit('_lrx', 1)[1])
    if len(curve) < len(factors) or factor not in (factors[0], factors[-1]):
      continue  # some of its runs are still training
    new = factor * 2 if factor == factors[-1] else factor / 2
    extensions[key] = sorted({*extensions.get(key, []), new})
  os.makedirs(os.path.dirname(EXTENSIONS), exist_ok=True)
  with open(EXTENSIONS, 'w') as f:
    json.dump(extensions, f, indent=1, sort_keys=True)
  return extensions


def optimum_width(n_opt: float) -> int:
  """The width (a multiple of 4 that its heads divide) whose N_compute is nearest n_opt."""
  widths = [w for w in range(8, 257, 4) if w % shape(w)['model.n_heads'] == 0]
  return min(widths, key=lambda w: abs(math.log(compute_per_token(w) / 6 / n_opt)))


def get_runs():
  runs = []
  for budget in BUDGETS:
    for width in BUDGET_WIDTHS[budget]:
      runs += size_runs(budget, width)
  for budget in LADDER_BUDGETS:  # the predicted optimum, trained after the prediction
    if os.path.exists(prediction_path(budget)):
      with open(prediction_path(budget)) as f:
        width = optimum_width(json.load(f)['optimum']['N'])
      if width not in BUDGET_WIDTHS[budget]:  # else a planned size tests it
        runs += size_runs(budget, width, 'optimum_')
  seeded = [run for run in runs if run[0] == SEED_RUN]
  runs += tuning.with_seeds(seeded, 3)[1:]
  return runs


def _target(name_runs: list) -> dict:
  """The ladder target of one (size, budget): its N_compute, D and the names of its runs."""
  (first, overrides), *_ = name_runs
  tokens = overrides['train.steps'] * BATCH * SEQ_LEN
  return {
    'name': first.rsplit('_lr', 1)[0],
    'N': compute_per_token(overrides['model.d_model']) / 6,
    'D': tokens,
    'runs': [name for name, _ in name_runs],
  }


def predict(root: str) -> dict:
  """Writes the prediction of every ladder budget that has none yet, from its ladder's law
  fitted to the budgets up to its fit_below (a committed prediction is never remade)."""
  rows, predictions = read_rows(root), {}
  for rung in LADDERS:
    for budget in rung.budgets:
      if os.path.exists(prediction_path(budget)):
        continue
      prediction = ladder.predict(
        rows,
        [_target(size_runs(budget, w)) for w in BUDGET_WIDTHS[budget]],
        budget,
        fit_below=rung.fit_below,
        n_col='N_compute',
        place_optimum=lambda n, b=budget: _target(size_runs(b, optimum_width(n), 'optimum_')),
        law=rung.law,
      )
      ladder.write_prediction(prediction, prediction_path(budget))
      predictions[budget_name(budget)] = prediction
  return predictions


def retrodict(root: str) -> list[dict]:
  """Post hoc, not predictions: each law fitted to the tuned frontier up to each budget, against
  every trained budget above it, as the mean absolute relative error over that budget's tuned
  (N, D). Written to RESULTS/ladder_retrodiction.json."""
  rows = read_rows(root)
  frontier, _ = tuning.tuned_frontier([r for r in rows if r.get('eval_loss') is not None])
  by_budget = {}
  for row in frontier:
    by_budget.setdefault(float(row['name'][1:].split('_')[0]), []).append(row)
  results = []
  for fit_below in BUDGETS[2:]:
    fitted = ladder.fit_laws(rows, fit_below, 'N_compute', 'train.lr')
    for budget in [b for b in sorted(by_budget) if b > fit_below]:
      tested = by_budget[budget]
      n = np.array([r['N_compute'] for r in tested])
      d = np.array([r['D'] for r in tested])
      actual = np.array([r['eval_loss'] for r in tested])
      errors = {
        law: float(np.mean(np.abs(ladder.predicted_loss(law, p, n, d, budget) / actual - 1)))
        for law, p in fitted.by_law.items()
      }
      results.append(
        {'fit_below': fit_below, 'budget': budget, 'runs': len(tested), 'mean_abs_error': errors}
      )
  with open(os.path.join(RESULTS, 'ladder_retrodiction.json'), 'w') as f:
    json.dump(results, f, indent=1)
    f.write('\n')
  return results


def hypothesis(doc: str) -> str:
  """The 'Hypothesis:' paragraph of a sweep file's docstring."""
  start = doc.index('Hypothesis:')
  return ' '.join(doc[start : doc.index('\n\n', start)].split()) + '\n'


def write_results(root: str, out: str, doc: str = __doc__) -> str:
  """The report and card of the runs in `root` (laws on the tuned frontier, N = N_compute),
  written with a copy of results.jsonl to `out`, the committed results directory."""
  from gptjax.scaling import report  # matplotlib: imported only here

  with open(os.path.join(root, 'hypothesis.md'), 'w') as f:
    f.write(hypothesis(doc))
  os.makedirs(out, exist_ok=True)
  shutil.copy(os.path.join(root, 'results.jsonl'), os.path.join(out, 'results.jsonl'))
  return report.write_report(root, out, 200, 0, 'train.lr', 'N_compute')


def check(root: str) -> dict:
  """Each ladder budget's prediction against its trained runs, beside the seed noise; the
  largest checked budget's is also ladder_check.json, the one the report's card shows."""
  rows, checks = read_rows(root), {}
  noise = tuning.seed_noise(rows).get(SEED_RUN)
  trained = {row['name'] for row in rows}
  for budget in LADDER_BUDGETS:
    if not os.path.exists(prediction_path(budget)):
      continue
    with open(prediction_path(budget)) as f:
      prediction = json.load(f)
    if trained.isdisjoint(name for t in prediction['targets'] for name in t['runs']):
      continue  # not trained yet
    checks[budget_name(budget)] = ladder.check(prediction, rows, noise)
    with open(prediction_path(budget, 'check'), 'w') as f:
      json.dump(checks[budget_name(budget)], f, indent=1)
  if checks:
    with open(os.path.join(RESULTS, 'ladder_check.json'), 'w') as f:
      json.dump(list(checks.values())[-1], f, indent=1)
  return checks


if __name__ == '__main__':
  command = sys.argv[1] if len(sys.argv) > 1 else ''
  if command == 'plan':
    total = 0.0
    for name, overrides in get_runs():
      flops = (
        compute_per_token(overrides['model.d_model']) * overrides['train.steps'] * BATCH * SEQ_LEN
      )
      total += flops
      print(f'{name:28s} steps {overrides["train.steps"]:>6} C {flops:.3g}')
    print(f'{len(get_runs())} runs, {total:.3g} FLOPs')
  elif command in ('predict', 'check', 'retrodict') and len(sys.argv) == 3:
    action = {'predict': predict, 'check': check, 'retrodict': retrodict}[command]
    print(json.dumps(action(sys.argv[2]), indent=1))
  elif command == 'extend' and len(sys.argv) in (3, 4):
    print(json.dumps(extend(*sys.argv[2:]), indent=1))
  elif command == 'report' and len(sys.argv) == 3:
    print(write_results(sys.argv[2], RESULTS))
  else:
    sys.exit(
      f'usage: {os.path.basename(__file__)} plan | extend ROOT [LOSS_COL] | predict ROOT | '
      'check ROOT | retrodict ROOT | report ROOT'
    )
