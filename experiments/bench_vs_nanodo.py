"""gptjax's train step against google-deepmind/nanodo's on the same machine and shapes.

  git clone https://github.com/google-deepmind/nanodo /path/to/nanodo   # once, anywhere
  python -m experiments.bench_vs_nanodo --nanodo /path/to/nanodo \\
      --out experiments/results/bench_vs_nanodo_cpu.json

nanodo is a minimal Flax decoder with its own train step: the JAX peer a researcher would
otherwise pick. Nothing is fetched at run time and nothing of nanodo is copied: each nanodo run
imports nanodo's model (nanodo.model.TransformerDo), loss (nanodo.loss.get_default_loss_fn),
optimizer (nanodo.optimizer.get_optimizer: AdamW inside optax.MultiSteps) and train step
(nanodo.train.Trainer, which also computes nanodo's per-step metrics) from the checkout given.
nanodo's data pipeline and logging need grain, clu and tensorflow_datasets, which only
nanodo.train's imports touch here; where they are not installed, empty stand-in modules take
their place. Each gptjax run is `python -m gptjax.bench --shape ... --json`.

For each round, shape and dtype the two run one after the other, each in a fresh process, on the
same random tokens' shapes (layers, heads, d_model, seq, batch, vocab; d_ff = 4 d_model, n_ctx =
seq), timing the median of --steps steps after --warmup. Reported per shape and dtype: the median
tokens/s of each over the rounds and the median of the per-round ratios gptjax / nanodo.

What differs between the two models, and what is matched:
  - matched because it costs time: no gradient clipping (nanodo's default; gptjax.bench runs with
    train.grad_clip=0), and per-step gradient statistics (nanodo's Trainer computes the rms, mean
    and std of the gradients, parameters and updates every step; gptjax's step computes the
    global gradient norm and a finiteness check). nanodo's per-layer metrics
    (log_internal_metrics) are off, as they are in gptjax.
  - left as each model has it (a small share of the step): gptjax has biases, a fused QKV
    projection and LayerNorm epsilon 1e-5; nanodo has no biases, separate Q, K, V projections,
    LayerNorm epsilon 1e-6 without a bias, a float32 output projection in both dtypes, and no
    weight-decay mask. Both use tied embeddings, learned positions, tanh GELU, float32 parameters
    and AdamW state; the AdamW constants (gptjax b2 0.95, nanodo's b2 set to match) do not change
    the work.
  - bfloat16: gptjax's model.dtype=bfloat16 (products in bfloat16 accumulating in float32) against
    nanodo's model.dtype=bfloat16 (Flax modules with dtype=bfloat16).
"""

import json
import os
import statistics
import subprocess
import sys
import time
import types

from absl import app, flags

from gptjax.cli import parse_flags
from gptjax.data.atomic import write_atomic
from gptjax.training.benchmark import COMPARISON_SHAPES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE_FIELDS = ('layers', 'heads', 'd_model', 'seq', 'batch', 'vocab')

_NANODO = flags.DEFINE_string('nanodo', '', 'A local nanodo checkout (holding nanodo/model.py).')
_OUT = flags.DEFINE_string('out', '', 'Write the results JSON here (default: print it).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternations of the two per shape.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per run.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.', lower_bound=0)
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
_SHAPES = flags.DEFINE_multi_string(
  'shape',
  [],
  'layers,heads,d_model,seq,batch,vocab (repeatable); default: the four of bench_vs_torch',
)
_GPTJAX_ARGS = flags.DEFINE_multi_string(
  'gptjax_arg', [], 'Extra gptjax.bench arguments, e.g. --gptjax_arg=--config.model.remat=full'
)
_WORKER = flags.DEFINE_string(
  'nanodo_worker', '', 'Internal: time nanodo once at this shape and print JSON.'
)
_WORKER_DTYPE = flags.DEFINE_string('worker_dtype', 'float32', 'Internal: the worker dtype.')


class _StandIn(types.ModuleType):
  """A module whose every attribute is a placeholder class: enough for nanodo's signatures."""

  def __getattr__(self, name: str):
    if name.startswith('__'):
      raise AttributeError(name)
    return type(name, (), {})


def _stand_in_modules() -> None:
  """Stand-ins for what nanodo.train imports only for data loading and logging, if absent."""
  names = ('grain', 'grain.python', 'clu', 'clu.metric_writers', 'clu.periodic_actions')
  for name in (*names, 'tensorflow_datasets'):
    try:
      __import__(name)
    except ImportError:
      sys.modules[name] = _StandIn(name)
      parent, _, child = name.rpartition('.')
      if parent:
        setattr(sys.modules[parent], child, sys.modules[name])


def time_nanodo(checkout: str, shape: tuple[int, ...], dtype: str, steps: int, warmup: int) -> dict:
  """nanodo's own Trainer.do_step on random tokens: median tokens/s of `steps` steps."""
  sys.path.insert(0, checkout)
  _stand_in_modules()
  import jax
  import jax.numpy as jnp
  from jax.experimental import mesh_utils
  from jax.sharding import Mesh
  from nanodo import model_factory, train
  from nanodo.configs import default

  layers, heads, d_model, seq, batch, vocab = shape
  c = default.get_config()
  c.batch_size = batch
  c.log_internal_metrics = False
  c.model.update(D=d_model, H=heads, L=seq, N=layers, F=4 * d_model, dtype=dtype)
  c.opt.update(b2=0.95, clip_by_global_norm=None)
  mesh = Mesh(mesh_utils.create_device_mesh((jax.device_count(),)), ('data',))
  model, get_loss_fn = model_factory.get_model_and_loss(c, vocab)
  start = time.perf_counter()
  shardings, state = train._init_train_state(c, model, rng=jax.random.PRNGKey(c.seed), mesh=mesh)
  trainer = train.Trainer(c, state, mesh, shardings, get_loss_fn)
  batches = [
    jax.random.randint(jax.random.key(i), (batch, seq), 0, vocab, jnp.int32)
    for i in range(warmup + steps)
  ]  # one per step: the step donates its input
  trainer.do_step(0, batches[0])
  jax.block_until_ready(trainer.state)
  compile_s = time.perf_counter() - start
  for i in range(1, warmup):
    trainer.do_step(i, batches[i])
  jax.block_until_ready(trainer.state)
  step_s = []
  for i in range(max(warmup, 1), max(warmup, 1) + steps):
    start = time.perf_counter()
    metrics = trainer.do_step(i, batches[i % len(batches)])
    jax.block_until_ready(trainer.state)
    step_s.append(time.perf_counter() - start)
  median_s = statistics.median(step_s)
  return {
    'tokens_per_s': batch * seq / median_s,
    'step_ms': 1e3 * median_s,
    'compile_s': compile_s,
    'final_loss': float(metrics['train_loss']),
  }


def _nanodo(shape: tuple[int, ...], dtype: str) -> dict:
  command = [
    sys.executable,
    '-m',
    'experiments.bench_vs_nanodo',
    f'--nanodo={_NANODO.value}',
    f'--nanodo_worker={",".join(map(str, shape))}',
    f'--worker_dtype={dtype}',
    f'--steps={_STEPS.value}',
    f'--warmup={_WARMUP.value}',
  ]
  out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
  return json.loads(out.strip().splitlines()[-1])


def _gptjax(shape: tuple[int, ...], dtype: str) -> dict:
  command = [
    sys.executable,
    '-m',
    'gptjax.bench',
    '--shape',
    ','.join(map(str, shape)),
    f'--steps={_STEPS.value}',
    f'--warmup={_WARMUP.value}',
    '--json',
    f'--config.model.dtype={dtype}',
    '--config.train.grad_clip=0',
    *_GPTJAX_ARGS.value,
  ]
  return json.loads(
    subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
  )


def _shapes() -> list[tuple[int, ...]]:
  if not _SHAPES.value:
    return list(COMPARISON_SHAPES)
  return [tuple(int(v) for v in s.split(',')) for s in _SHAPES.value]


def main(argv: list[str]) -> None:
  del argv
  if not _NANODO.value or not os.path.isfile(os.path.join(_NANODO.value, 'nanodo', 'model.py')):
    sys.exit(f'error: --nanodo={_NANODO.value!r} is not a nanodo checkout (no nanodo/model.py)')
  if _WORKER.value:
    shape = tuple(int(v) for v in _WORKER.value.split(','))
    result = time_nanodo(_NANODO.value, shape, _WORKER_DTYPE.value, _STEPS.value, _WARMUP.value)
    print(json.dumps(result))
    return
  runs = {(shape, dtype): [] for shape in _shapes() for dtype in _DTYPES.value}
  for _ in range(_ROUNDS.value):
    for shape, dtype in runs:
      nanodo = _nanodo(shape, dtype)
      gptjax = _gptjax(shape, dtype)
      row = {
        'nanodo': nanodo['tokens_per_s'],
        'gptjax': gptjax['tokens_per_s'],
        'nanodo_compile_s': nanodo['compile_s'],
        'gptjax_compile_s': gptjax['compile_s'],
        'load_average_1m': gptjax['load_average_1m'],
      }
      runs[shape, dtype].append(row)
      print(f'{shape} {dtype}: {row}', file=sys.stderr)
  results = []
  for (shape, dtype), rows in runs.items():
    result = {'shape': dict(zip(SHAPE_FIELDS, shape)), 'dtype': dtype}
    for key in rows[0]:
      result[key] = statistics.median(row[key] for row in rows)
    result['ratio'] = statistics.median(row['gptjax'] / row['nanodo'] for row in rows)
    result['ratios'] = [row['gptjax'] / row['nanodo'] for row in rows]
    results.append(result)
  report = {
    'rounds': _ROUNDS.value,
    'steps': _STEPS.value,
    'warmup': _WARMUP.value,
    'gptjax_args': _GPTJAX_ARGS.value,
    'cpu_count': os.cpu_count(),
    'results': results,
  }
  text = json.dumps(report, indent=1) + '\n'
  if _OUT.value:
    write_atomic(_OUT.value, text)
  else:
    print(text, end='')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
