"""Why Kaplan et al. and Hoffmann et al. disagreed, in miniature (Porian et al. 2024): the
isoFLOP study of experiments/isoflop_study.py re-analysed and re-run three ways, each a choice
Kaplan et al. made, to see how each moves the allocation exponent a (N_opt ~ C^a) toward
Kaplan's 0.73 from Chinchilla's 0.5.

  python -m gptjax.sweep run experiments/porian_ablation.py --root runs/porian_ablation \\
      --convention 6ND+attn+embed
  python experiments/porian_ablation.py runs/isoflop_study runs/porian_ablation   # table, plot

Arms, each over the budgets the ladder's law is fitted to (2.5e11 to 2e12 FLOPs, 8x):
- tuned: the study itself: C counts the head (6ND+attn+embed), N = N_compute, the best of 3
  learning rates per (N, D), warmup over N tokens.
- (i) no head FLOPs: the same runs, C counted as 6N D + attention (no embedding or head matmuls)
  and N as the non-embedding parameters, as Kaplan et al. count them. No new runs.
- (ii) one untuned learning rate: every size at lr 2e-3 (gptjax's default, what the old study
  used), warmup as the study's. New runs (untuned_*).
- (iii) long warmup: every run warms up over 1,000 steps (768K tokens; half the run where that is
  shorter, as it is for the largest models of the smaller budgets), at the study's middle learning
  rate (lr x1); compared with the study's lr x1 runs, which differ only in the warmup. New runs
  (warmup1000_*).

Measured: 48 runs, about 1.4 hours of wall time on 2 cores (beside the isoFLOP study), 4.5e13
FLOPs.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402  (the study re-run)

UNTUNED_LR = 2e-3
LONG_WARMUP_STEPS = 1000


def get_config():
  return isoflop_study.get_config()


def _in_ablation(name: str) -> bool:
  """The budgets the ladder's law is fitted to (up to isoflop_study.FIT_BELOW)."""
  budgets = [b for b in isoflop_study.BUDGETS if b <= isoflop_study.FIT_BELOW]
  return any(f'{isoflop_study.budget_name(b)}_' in name for b in budgets)


def get_runs():
  runs = []
  for name, overrides in isoflop_study.get_runs():
    if not name.endswith('_lrx1') or 'optimum' in name or not _in_ablation(name):
      continue
    key = name.rsplit('_lr', 1)[0]
    runs.append((f'untuned_{key}', {**overrides, 'train.lr': UNTUNED_LR}))
    warmup = min(LONG_WARMUP_STEPS, overrides['train.steps'] // 2)
    runs.append((f'warmup1000_{key}', {**overrides, 'train.warmup_steps': warmup}))
  return runs


def arms(study_rows: list[dict], ablation_rows: list[dict]) -> dict[str, list[dict]]:
  """{arm: the rows its isoFLOP fit uses, N = N_compute}; arm (i) is kaplan_counted_exponent's."""
  from gptjax.scaling import tuning

  done = lambda rows: [
    r for r in rows if r.get('eval_loss') is not None and '_seed' not in r['name']
  ]
  main = [r for r in done(study_rows) if 'optimum' not in r['name'] and _in_ablation(r['name'])]
  arm = lambda rows, prefix: [{**r, 'N': r['N_compute']} for r in rows if prefix in r['name']]
  return {
    'tuned': arm(tuning.tuned_frontier(main)[0], ''),
    '(ii) one untuned LR': arm(done(ablation_rows), 'untuned_'),
    "lr x1 (the warmup arm's control)": arm(main, '_lrx1'),
    '(iii) long warmup': arm(done(ablation_rows), 'warmup1000_'),
  }


def kaplan_counted_exponent(tuned: list[dict], resamples: int, seed: int = 0) -> dict:
  """Arm (i): the tuned runs as Kaplan et al. would count them, N the non-embedding parameters and
  C = 6 N D + attention (no embedding or head matmuls). Under that count the runs of one planned
  budget no longer share a C (the head is a larger share of the smaller models), so each
  budget's N_opt is the minimum of its parabola in log N (Approach 2's) and its C the Kaplan
  count at N_opt (log C is a straight line in log N along one budget); a is the slope of log
  N_opt against log C. Resamples draw runs with replacement within each budget."""
  from gptjax.scaling import laws

  budgets = {}
  for r in tuned:
    width = r['config']['model']['d_model']
    kaplan_c = isoflop_study.compute_per_token(width, '6ND+attn') * r['D']
    budgets.setdefault(r['name'].split('_')[0], []).append((r['N'], kaplan_c, r['eval_loss']))
  groups = [g for g in budgets.values() if len({n for n, _, _ in g}) >= 3]

  def exponent(groups) -> float:
    points = []
    for g in groups:
      log_n, log_c = np.log([n for n, _, _ in g]), np.log([c for _, c, _ in g])
      if len(set(log_n)) < 3:  # a resample that drew fewer than 3 sizes: no parabola
        continue
      minimum = laws.parabola_minimum(log_n, np.array([loss for _, _, loss in g]))
      if minimum is None or not log_n.min() <= minimum[1] <= log_n.max():
        continue
      points.append((np.polyval(np.polyfit(log_n, log_c, 1), minimum[1]), minimum[1]))
    if len(points) < 2:
      return float('nan')
    log_c_opt, log_n_opt = np.array(points).T
    return float(np.polyfit(log_c_opt, log_n_opt, 1)[0])

  rng = np.random.default_rng(seed)
  refits = [
    exponent([[g[i] for i in rng.integers(0, len(g), len(g))] for g in groups])
    for _ in range(resamples)
  ]
  refits = [x for x in refits if np.isfinite(x)]
  interval = (
    [float(np.percentile(refits, 2.5)), float(np.percentile(refits, 97.5))] if refits else None
  )
  return {'runs': len(tuned), 'a': exponent(groups), 'a_95': interval, 'budgets': len(groups)}


def analyse(study_root: str, ablation_root: str, out: str, resamples: int = 200) -> dict:
  from matplotlib.figure import Figure

  from gptjax.errors import UserError
  from gptjax.scaling import uncertainty
  from gptjax.scaling.observations import observations, read_rows

  ablation_rows = read_rows(ablation_root) if os.path.exists(ablation_root) else []
  results = {}
  study_rows = read_rows(study_root)
  fitted_rows = arms(study_rows, ablation_rows)
  tuned = [r for r in study_rows if r['name'] in {t['name'] for t in fitted_rows['tuned']}]
  results['(i) no head FLOPs'] = kaplan_counted_exponent(tuned, resamples)
  for arm, rows in fitted_rows.items():
    try:
      fit = uncertainty.fit_with_intervals(
        observations(rows, source=arm), 'isoflop', 'eval_loss', resamples, 0
      )
    except UserError as e:
      results[arm] = {'runs': len(rows), 'not_fitted': str(e)}
      continue
    results[arm] = {
      'runs': len(rows),
      'a': fit.fitted.a,
      'a_95': fit.intervals.get('a'),
      'budgets': [b.compute for b in fit.fitted.budgets],
      'skipped_budgets': list(fit.fitted.skipped),
    }
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'porian_ablation.json'), 'w') as f:
    json.dump(results, f, indent=1)
  fig = Figure(figsize=(7, 4))
  ax = fig.add_subplot()
  fitted = [(arm, r) for arm, r in results.items() if 'a' in r]
  for y, (arm, r) in enumerate(fitted):
    low, high = r['a_95'] or (r['a'], r['a'])
    ax.errorbar(r['a'], y, xerr=[[r['a'] - low], [high - r['a']]], fmt='o', capsize=4)
  ax.set_yticks(range(len(fitted)), [arm for arm, _ in fitted])
  for value, label in ((0.5, 'Chinchilla 0.50'), (0.73, 'Kaplan 0.73')):
    ax.axvline(value, ls='--', color='grey')
    ax.text(value, len(fitted) - 0.5, label, ha='center', fontsize=8)
  ax.set_xlabel('allocation exponent a (N_opt ~ C^a), 95% bootstrap interval')
  ax.set_title('What moves the isoFLOP exponent (Porian et al. 2024, in miniature)')
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'porian_ablation.png'), dpi=120)
  return results


if __name__ == '__main__':
  study, ablation = (
    sys.argv[1:3] if len(sys.argv) == 3 else ('runs/isoflop_study', 'runs/porian_ablation')
  )
  out = os.path.join(os.path.dirname(__file__), 'results', 'porian_ablation')
  for arm, result in analyse(study, ablation, out).items():
    print(f'{arm:36s} {json.dumps(result)}')
