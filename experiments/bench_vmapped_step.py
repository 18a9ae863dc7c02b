"""Why stacking gains what it gains on XLA:CPU: one train step of a model alone against one step of
8 runs of it stacked under jax.vmap (gptjax/training/stacked.py's step), for the configs/tiny.py
shape and the same with d_model 128; the median of 50 steps after a warm-up, per run.

  python experiments/bench_vmapped_step.py  # experiments/results/bench_vmapped_step_cpu.json

Run it on an otherwise idle machine.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.models import registry
from gptjax.training import step as step_lib
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import init_state

RUNS = 8


def _median_step_s(step, state, *inputs, repeats: int = 50) -> float:
  state, _ = step(state, *inputs)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, _ = step(state, *inputs)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure(d_model: int) -> dict:
  config = tiny.get_config()
  config.model.update(d_model=d_model, d_ff=4 * d_model)
  model = registry.build(configuration.model_config(config, config.tokenizer.vocab_size))
  objective = registry.get('gpt').objective(model, config, None)
  optimizer = make_optimizer(config.train)
  alone = jax.jit(step_lib.make_train_step(objective, optimizer, 1, True), donate_argnums=0)

  def one_run(state, batch, lr):
    run_optimizer = make_optimizer(config.train, None, schedule=lambda count: lr)
    return step_lib.make_train_step(objective, run_optimizer, 1, True)(state, batch)

  together = jax.jit(jax.vmap(one_run), donate_argnums=0)
  shape = (RUNS, config.train.global_batch_size, config.train.seq_len + 1)
  batches = jax.random.randint(jax.random.PRNGKey(0), shape, 0, config.tokenizer.vocab_size)
  states = [init_state(model, optimizer, seed) for seed in range(RUNS)]
  stack = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
  alone_s = _median_step_s(alone, states[0], batches[0])
  together_s = _median_step_s(together, stack, batches, jnp.full((RUNS,), 1e-3))
  return {
    'd_model': d_model,
    'alone_ms': round(alone_s * 1e3, 3),
    f'stack_of_{RUNS}_ms': round(together_s * 1e3, 3),
    'stacked_ms_per_run': round(together_s / RUNS * 1e3, 3),
    'gain_per_run': round(alone_s / (together_s / RUNS), 2),
  }


if __name__ == '__main__':
  results = [measure(d) for d in (32, 128)]
  for r in results:
    print(r)
  out = os.path.join(os.path.dirname(__file__), 'results', 'bench_vmapped_step_cpu.json')
  with open(out, 'w') as f:
    json.dump({'machine': f'{os.cpu_count()} CPU cores', 'steps': results}, f, indent=1)
