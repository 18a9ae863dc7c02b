"""Stacked runs against one after another, end to end: wall time of `python -m gptjax.sweep run`
on a fresh root (a new process, a new XLA cache, the shared tokenizer and caches made anew), for
8 runs of one shape at 8 learning rates, with --max_stack 8 against --max_stack 1.

  python experiments/bench_stacked.py            # writes experiments/results/bench_stacked_cpu.json

Shapes: configs/tiny.py as it is (d_model 32, 2 blocks, 60 steps of 8 x 32 tokens), and the same
with d_model 128 (d_ff 512). Then the overhead share of a 20-run tiny sweep, stacked: everything
that is not train steps (process start, data, compilation, evaluation, checkpoints, rows) over
the wall time, at tiny's 60 steps and at 600. Targets (issue 16): stacked >= 4x faster for the
tiny shape, >= 2x for d_model 128; overhead <= 25%. Run it on an otherwise idle machine.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = """
from gptjax.configs import tiny
def get_config():
  config = tiny.get_config()
  config.sample.max_new_tokens = 0
  config.model.update(d_model={d_model}, d_ff={d_ff})
  config.train.update(steps={steps}, eval_every={every}, checkpoint_every={every})
  return config
def get_runs():
  return [(f'lr{{i}}', {{'train.lr': 1e-3 * 2 ** (i / 4)}}) for i in range({runs})]
"""


def run_sweep(directory: str, d_model: int, runs: int, steps: int, max_stack: int) -> dict:
  path = os.path.join(directory, f'sweep_d{d_model}_{runs}x{steps}_{max_stack}.py')
  every = steps // 2  # tiny's cadence: evaluate and save twice
  with open(path, 'w') as f:
    f.write(SWEEP.format(d_model=d_model, d_ff=4 * d_model, steps=steps, every=every, runs=runs))
  root = os.path.join(directory, os.path.basename(path)[:-3])
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(root, '_xla_cache')}
  start = time.perf_counter()
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'gptjax.sweep',
      'run',
      path,
      '--root',
      root,
      '--max_stack',
      str(max_stack),
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  wall = time.perf_counter() - start
  if result.returncode:
    raise SystemExit(result.stderr[-2000:])
  # Train-step seconds as each trainer reports them: one line per stack or per run.
  train_steps = sum(float(s) for s in re.findall(r'train steps ([0-9.]+)', result.stdout))
  with open(os.path.join(root, 'results.jsonl')) as f:
    losses = {row['name']: row['eval_loss'] for row in map(json.loads, f)}
  return {
    'eval_losses': losses,
    'd_model': d_model,
    'runs': runs,
    'steps': steps,
    'max_stack': max_stack,
    'wall_s': round(wall, 2),
    'train_steps_s': round(train_steps, 2),
    'overhead_share': round(1 - train_steps / wall, 3),
  }


def main() -> None:
  results = {'machine': f'{os.cpu_count()} CPU cores', 'comparisons': [], 'overhead': []}
  with tempfile.TemporaryDirectory() as directory:
    for d_model in (32, 128):
      one_by_one = run_sweep(directory, d_model, 8, 60, max_stack=1)
      together = run_sweep(directory, d_model, 8, 60, max_stack=8)
      speedup = one_by_one['wall_s'] / together['wall_s']
      differences = [
        abs(loss - together['eval_losses'][name])
        for name, loss in one_by_one['eval_losses'].items()
      ]
      results['comparisons'].append(
        {
          'one_by_one': one_by_one,
          'stacked': together,
          'speedup': round(speedup, 2),
          'largest_eval_loss_difference': max(differences),
          'runs_equal_to_the_bit': sum(d == 0 for d in differences),
        }
      )
      print(
        f'd_model {d_model}: {one_by_one["wall_s"]} s -> {together["wall_s"]} s, {speedup:.2f}x'
      )
    for steps in (60, 600):
      sweep = run_sweep(directory, 32, 20, steps, max_stack=20)
      results['overhead'].append(sweep)
      print(f'20 tiny runs x {steps} steps, stacked: overhead {sweep["overhead_share"]:.0%}')
  out = os.path.join(REPO, 'experiments', 'results', 'bench_stacked_cpu.json')
  with open(out, 'w') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
