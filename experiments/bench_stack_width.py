"""How many runs to stack: one train step of R runs stacked under jax.vmap against one run alone,
for the isoFLOP study's shapes (experiments/isoflop_study.py: byte tokens, 2 blocks, 768-token
steps), R = 1, 2, 3, 4, 6; the median of 30 steps after a warm-up.

  python experiments/bench_stack_width.py      # experiments/results/bench_stack_width_cpu.json

Run it on an otherwise idle machine: a stack's step is R times the work, and the question is at
which R the time per run stops falling (XLA:CPU's per-operation cost is shared by the stack; the
activations of R runs may no longer fit the caches).
"""

import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402
from bench_vmapped_step import _median_step_s  # noqa: E402

from gptjax import configuration  # noqa: E402
from gptjax.models import registry  # noqa: E402
from gptjax.training import step as step_lib  # noqa: E402
from gptjax.training.optimizer import make_optimizer  # noqa: E402
from gptjax.training.state import init_state  # noqa: E402

WIDTHS = (16, 32, 48, 96)
STACKS = (1, 2, 3, 4, 6)


def measure(width: int, runs: int) -> dict:
  config = isoflop_study.get_config()
  config.model.update({k.split('.')[1]: v for k, v in isoflop_study.shape(width).items()})
  model = registry.build(configuration.model_config(config, 262))
  objective = registry.get('gpt').objective(model, config, None)
  optimizer = make_optimizer(config.train)

  def one_run(state, batch, lr):
    run_optimizer = make_optimizer(config.train, None, schedule=lambda count: lr)
    return step_lib.make_train_step(objective, run_optimizer, 1, True)(state, batch)

  step = jax.jit(jax.vmap(one_run), donate_argnums=0)
  train = config.train
  shape = (runs, train.global_batch_size, train.seq_len + 1)
  batches = jax.random.randint(jax.random.PRNGKey(0), shape, 0, 262)
  states = [init_state(model, optimizer, seed) for seed in range(runs)]
  stack = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
  seconds = _median_step_s(step, stack, batches, jnp.full((runs,), 1e-3), repeats=30)
  return {
    'd_model': width,
    'runs': runs,
    'step_ms': round(seconds * 1e3, 2),
    'ms_per_run': round(seconds / runs * 1e3, 2),
  }


if __name__ == '__main__':
  results = []
  for width in WIDTHS:
    for runs in STACKS:
      results.append(measure(width, runs))
      print(results[-1], flush=True)
  out = os.path.join(os.path.dirname(__file__), 'results', 'bench_stack_width_cpu.json')
  with open(out, 'w') as f:
    json.dump({'machine': f'{os.cpu_count()} CPU cores', 'steps': results}, f, indent=1)
