"""GPT-1's claim in miniature: generative pre-training, then fine-tuning, beats training the same
model from scratch on the task; and the auxiliary LM loss (lambda = 0.5) against none; each under
several seeds, so that a difference is counted only when it exceeds the seed noise.

  python -m experiments.gpt1_finetune runs/kaplan_model_size/d96_lrx1

For each built-in task, each of four variants, pre-trained or random weights (the same model and
tokenizer) x lm_coef 0.5 or 0, and each seed of --seeds (config.seed: the head's init, dropout, the
order of examples, and the built-in task's examples), fine-tunes with gptjax/configs/finetune.py:cpu
(override with --set finetune.FIELD=VALUE) into ROOT/<task>/<variant>/seed<k>, and keeps the best
epoch by validation accuracy. A run whose results.json exists is not run again (--report_only: none
is run, and the results are those of the finished runs); runs go seed by seed, so an interrupted
sweep leaves every variant with as many seeds as possible. Writes
experiments/results/gpt1_finetune/results.json after every run: each run's row; per (task, variant)
the mean and sd over seeds of the test and validation accuracy; and per task the contrasts
pre-trained vs scratch (at lm_coef 0.5 and at 0) and lm_coef 0.5 vs 0 (pre-trained): the difference
of mean test accuracies, its standard error from the seed sd, sqrt(sd1^2/n1 + sd2^2/n2), and the
verdict 'exceeds noise' only when |diff| > 2 se; and, as config.seed also draws the task's examples
(runs of one seed share their data), the paired view: the mean of the per-seed differences and its
se. gpt1_finetune.png: mean +- sd of the test accuracy per task and variant, the seeds as dots.
"""

import argparse
import json
import math
import os

import numpy as np
from absl import logging
from matplotlib.figure import Figure

from gptjax.cli import reported
from gptjax.configs import finetune as finetune_config
from gptjax.downstream import finetuning
from gptjax.errors import UserError
from gptjax.scaling.sweep import parse_override, run_config

NAME = 'gpt1_finetune'
VARIANTS = {  # name -> (random_init, lm_coef)
  'pretrained_lm0.5': (False, 0.5),
  'pretrained_lm0': (False, 0.0),
  'scratch_lm0.5': (True, 0.5),
  'scratch_lm0': (True, 0.0),
}
CONTRASTS = {  # name -> (variant a, variant b): the difference is a - b
  'pretrained_vs_scratch_lm0.5': ('pretrained_lm0.5', 'scratch_lm0.5'),
  'pretrained_vs_scratch_lm0': ('pretrained_lm0', 'scratch_lm0'),
  'lm0.5_vs_lm0_pretrained': ('pretrained_lm0.5', 'pretrained_lm0'),
}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('pretrained', help='the pre-training workdir to fine-tune')
  parser.add_argument(
    '--tasks',
    default='stdlib_test_or_lib,stdlib_same_file,stdlib_next_line',
    help='comma-separated built-in tasks (or JSONL specs)',
  )
  parser.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated config.seed values')
  parser.add_argument('--root', default=os.path.join('runs', NAME), help='fine-tuning workdirs')
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='a config override, e.g. finetune.epochs=2 (repeatable)',
  )
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
  parser.add_argument(
    '--report_only',
    action='store_true',
    help='run nothing: write the results of the finished runs only',
  )
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    variants = args.variants.split(',')
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
      raise UserError(f'unknown variant {unknown[0]!r}; use {", ".join(VARIANTS)}')
    seeds = [int(s) for s in args.seeds.split(',')]
    tasks = args.tasks.split(',')
    base = run_config(finetune_config.get_config('cpu'), dict(map(parse_override, args.set)), NAME)
    rows = []
    for seed in seeds:
      for task in tasks:
        for variant in variants:
          random_init, lm_coef = VARIANTS[variant]
          workdir = os.path.join(
            args.root, os.path.basename(task.rstrip('/')), variant, f'seed{seed}'
          )
          overrides = {
            'seed': seed,
            'finetune.init_from': args.pretrained,
            'finetune.task': task,
            'finetune.random_init': random_init,
            'finetune.lm_coef': lm_coef,
          }
          label = f'{task} / {variant} / seed {seed}'
          result = run_once(base, overrides, workdir, label, args.report_only)
          if result is None:
            continue
          rows.append(
            {
              'task': task,
              'variant': variant,
              'seed': seed,
              'random_init': random_init,
              'lm_coef': lm_coef,
              'workdir': workdir,
              **result,
            }
          )
          write(args.out, {'pretrained': args.pretrained, 'config': base.to_dict()}, rows)
    print(f'wrote {args.out}/results.json and {NAME}.png')


def run_once(
  base, overrides: dict, workdir: str, label: str, report_only: bool = False
) -> dict | None:
  """The results of one fine-tuning run (run now unless its results.json exists; None instead
  when `report_only`), with the test accuracy's binomial standard error."""
  done = os.path.join(workdir, 'results.json')
  if not os.path.exists(done):
    if report_only:
      return None
    print(label, flush=True)
    finetuning.finetune(run_config(base, overrides, label), workdir, show_progress=False)
  with open(done) as f:
    result = json.load(f)
  p, n = test_accuracy(result), result.get('n_test', result['n_validation'])
  result['test_stderr'] = math.sqrt(p * (1 - p) / n)
  print(
    f'{label}: validation {result["validation_accuracy"]:.3f}, test {p:.3f} ± '
    f'{result["test_stderr"]:.3f} ({result["wall_s"]:.0f} s)',
    flush=True,
  )
  return result


def test_accuracy(row: dict) -> float:
  return row.get('test_accuracy', row['validation_accuracy'])


def mean_sd(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; nan for one value)."""
  values = np.asarray(values, dtype=float)
  sd = float(values.std(ddof=1)) if len(values) > 1 else float('nan')
  return float(values.mean()), sd


def summarize(rows: list[dict], key: str = 'variant') -> list[dict]:
  """Per (task, rows[key]): mean and sd over seeds of the test and validation accuracy."""
  cells = {}
  for r in rows:
    cells.setdefault((r['task'], r[key]), []).append(r)
  out = []
  for (task, name), group in cells.items():
    test_mean, test_sd = mean_sd([test_accuracy(r) for r in group])
    val_mean, val_sd = mean_sd([r['validation_accuracy'] for r in group])
    out.append(
      {
        'task': task,
        key: name,
        'n_seeds': len(group),
        'seeds': [r['seed'] for r in group],
        'test_mean': test_mean,
        'test_sd': test_sd,
        'validation_mean': val_mean,
        'validation_sd': val_sd,
      }
    )
  return out


def contrast(
  summary: list[dict],
  task: str,
  a: str,
  b: str,
  key: str = 'variant',
  rows: list[dict] | None = None,
) -> dict | None:
  """Mean test accuracy of `a` minus `b` on `task`, its standard error from the seed sd, and
  whether |diff| > 2 se (with `rows`, the paired view too); None where either cell is missing."""
  cell = {s[key]: s for s in summary if s['task'] == task}
  if a not in cell or b not in cell:
    return None
  x, y = cell[a], cell[b]
  diff = x['test_mean'] - y['test_mean']
  se = math.sqrt(x['test_sd'] ** 2 / x['n_seeds'] + y['test_sd'] ** 2 / y['n_seeds'])
  if math.isnan(se):
    verdict = 'needs >= 2 seeds each'
  else:
    verdict = 'exceeds noise' if abs(diff) > 2 * se else 'within noise'
  out = {
    'task': task,
    'a': a,
    'b': b,
    'n_a': x['n_seeds'],
    'n_b': y['n_seeds'],
    'diff': diff,
    'se': se,
    'z': diff / se if se > 0 else float('nan'),
    'verdict': verdict,
  }
  if rows is not None:
    out['paired'] = paired(rows, task, a, b, key)
  return out


def paired(rows: list[dict], task: str, a: str, b: str, key: str = 'variant') -> dict:
  """A supplementary view of the same difference: config.seed also draws the built-in task's
  examples, so runs of one seed share their data; the mean over the seeds both have of the
  per-seed difference of test accuracies, its se (sd / sqrt(n)), and whether |mean| > 2 se."""
  by_seed = {
    name: {r['seed']: test_accuracy(r) for r in rows if r['task'] == task and r[key] == name}
    for name in (a, b)
  }
  seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
  diffs = [by_seed[a][k] - by_seed[b][k] for k in seeds]
  mean, sd = mean_sd(diffs) if diffs else (float('nan'), float('nan'))
  se = sd / math.sqrt(len(diffs)) if diffs else float('nan')
  if math.isnan(se):
    verdict = 'needs >= 2 seeds each'
  else:
    verdict = 'exceeds noise' if abs(mean) > 2 * se else 'within noise'
  return {'seeds': seeds, 'diffs': diffs, 'mean': mean, 'sd': sd, 'se': se, 'verdict': verdict}


def write(out: str, header: dict, rows: list[dict]) -> None:
  summary = summarize(rows)
  contrasts = {}
  for task in dict.fromkeys(r['task'] for r in rows):
    for name, (a, b) in CONTRASTS.items():
      c = contrast(summary, task, a, b, rows=rows)
      if c is not None:
        contrasts.setdefault(name, []).append(c)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({**header, 'rows': rows, 'summary': summary, 'contrasts': contrasts}, f, indent=1)
  plot(rows, summary, os.path.join(out, f'{NAME}.png'))


def plot(
  rows: list[dict],
  summary: list[dict],
  path: str,
  key: str = 'variant',
  title: str = 'fine-tuning: pre-trained vs from scratch, with and without the LM loss',
) -> None:
  """Bars of the mean test accuracy per task and rows[key], the seed sd as error bars, each seed
  a dot."""
  task_names = list(dict.fromkeys(r['task'] for r in rows))
  names = list(dict.fromkeys(r[key] for r in rows))
  fig = Figure(figsize=(2.5 + 2 * len(task_names), 4), layout='constrained')
  ax = fig.subplots()
  width = 0.8 / len(names)
  for v, name in enumerate(names):
    x = np.arange(len(task_names)) + (v - (len(names) - 1) / 2) * width
    cells = [
      next((s for s in summary if s['task'] == t and s[key] == name), None) for t in task_names
    ]
    ax.bar(
      x,
      [c['test_mean'] if c else np.nan for c in cells],
      width,
      yerr=[c['test_sd'] if c and c['n_seeds'] > 1 else 0 for c in cells],
      capsize=3,
      label=f'{name} (n={max((c["n_seeds"] for c in cells if c), default=0)})',
    )
    for i, t in enumerate(task_names):
      seeds = [test_accuracy(r) for r in rows if r['task'] == t and r[key] == name]
      ax.plot([x[i]] * len(seeds), seeds, 'k.', markersize=3)
  ax.set_xticks(np.arange(len(task_names)), [os.path.basename(t.rstrip('/')) for t in task_names])
  ax.set(
    ylabel='test accuracy (mean ± sd over seeds)',
    ylim=(0, 1.15),
    title=title,
  )
  ax.legend(fontsize='small', loc='upper right', ncols=2)
  fig.savefig(path, dpi=120)


if __name__ == '__main__':
  main()
