"""Does the device wait on the input pipeline? Step time with real batches against one synthetic
batch already on the device, for the same compiled train step.

  python -m experiments.bench_input --config tiny --workdir runs/bench_input

Builds the run (tokenizer, token caches, compiled step) in WORKDIR as training does, then times,
in alternating rounds, --steps steps each of
  synthetic   the same device-resident batch every step (no input work at all);
  real        training's own batches, built on the host before each step (trainer.Run.batch), as
              the training loop does.
Each timing covers whole blocks of steps, ending with block_until_ready, so input work that
overlaps the device's costs nothing. Writes experiments/results/bench_input_cpu.json: the per-step
times of every round and their ratio (the issue's target: real <= 1.05 x synthetic).
"""

import argparse
import importlib
import json
import os
import statistics
import time

import jax
from absl import logging

from gptjax.cli import reported
from gptjax.training import trainer


def _time_block(run: trainer.Run, batches, steps: int) -> float:
  """Seconds per step over `steps` steps fed from the iterator `batches`."""
  start = time.perf_counter()
  for _ in range(steps):
    run.state, _ = run.train_step(run.state, next(batches))
  jax.block_until_ready(run.state)
  return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog='python -m experiments.bench_input', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('--config', default='tiny', help='a module of configs/')
  parser.add_argument('--workdir', default=os.path.join('runs', 'bench_input'))
  parser.add_argument('--steps', type=int, default=200, help='steps per timed block')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument(
    '--out', default=os.path.join('experiments', 'results', 'bench_input_cpu.json')
  )
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    config = importlib.import_module(f'configs.{args.config}').get_config()
    run = trainer.Run(config, args.workdir)
    try:
      synthetic = run.batch(0)
      sources = {
        'synthetic': lambda: iter(lambda: synthetic, None),
        'real': lambda: (run.batch(step) for step in range(10**9)),
      }
      for make in sources.values():  # warm up: compile, first touches of the token cache
        _time_block(run, make(), 5)
      seconds = {name: [] for name in sources}
      for _ in range(args.rounds):
        for name, make in sources.items():
          seconds[name].append(_time_block(run, make(), args.steps))
    finally:
      run.close()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
      'config': args.config,
      'steps_per_block': args.steps,
      'rounds': args.rounds,
      'device': jax.devices()[0].device_kind,
      'cpu_count': os.cpu_count(),
      'step_ms': {name: [1e3 * s for s in values] for name, values in seconds.items()},
      'median_step_ms': {name: 1e3 * s for name, s in median.items()},
      'real_over_synthetic': median['real'] / median['synthetic'],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != 'step_ms'}, indent=1))


if __name__ == '__main__':
  main()
