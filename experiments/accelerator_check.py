"""One run that measures gptjax's accelerator paths and writes everything to one JSON.

  python experiments/accelerator_check.py                # full on a GPU, smoke on a CPU
  python experiments/accelerator_check.py --smoke --out /tmp/check.json

The numbers in the README about GPUs should come from a run of this script, so that a person with
an H100 or H200 for a few minutes can send back one file. It records, in this order:

1. the devices: jax.devices(), the backend, device kind and count, the jax and jaxlib versions;
2. train-step benchmarks (gptjax.training.benchmark.bench_train) of GPT-2 small in bfloat16 with
   cuDNN attention (XLA's on a CPU), seq 1024, with model.scan_layers False and True, each at the
   largest global batch of a descending list that compiles and runs: a batch that runs out of
   memory, at compile time (gptjax's UserError) or at run time (XLA's RESOURCE_EXHAUSTED), is
   recorded in `attempts` and the next smaller one tried; one whose memory estimate is more than
   1.5 times the device's memory is not tried. tokens/s, step time, MFU against the data-sheet
   peak (bench_train's), XLA's memory count and compile time come from bench_train;
3. numerics: (a) the logits of cuDNN and XLA attention for the same GPT-2-small-shaped model and
   parameters on one batch, in bfloat16, with the maximum absolute difference against a stated
   tolerance (GPU only); (b) the same 50-step training run of the default config's model
   (gptjax.training.trainer, the byte tokenizer on the first 400 documents of the standard
   library) in bfloat16 and in float32, and the relative difference of the last step's train loss
   and of the final eval loss;
4. decoding speed (bench_decode) of GPT-2 small in bfloat16 at batch 1 and batch 8;
5. stacked runs (many small runs as one vmapped program): gptjax has none yet, recorded as skipped;
6. GPT-2 medium's train-step benchmarks, last, and only while the time budget (--budget_s) leaves
   room for them.

Every item starts only while the budget lasts; one that does not is recorded as skipped, with why.
An item that fails is recorded with its error and traceback, the others still run, the JSON is
written, and the script then ends with one `error:` line naming the failed items (status 1).

--smoke (the default on a CPU) runs every item at a CPU size: a 2-layer, d_model 64 model (4
layers for "medium"), seq 64, batch 4, three train steps, the tiny config for the loss comparison,
8 decoded tokens. The JSON says which mode ran. The budget decides only whether an item starts, so
the last one started may run past it: leave room below any hard limit.
"""

import contextlib
import dataclasses
import gc
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jaxlib
import ml_collections
from absl import flags

from gptjax import cli, configuration
from gptjax.configs import default, gpt2_small, tiny
from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.training import benchmark, trainer
from gptjax.training import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OUT = flags.DEFINE_string(
  'out',
  '',
  'Where to write the JSON; default experiments/results/accelerator_check_<device kind>.json.',
)
_SMOKE = flags.DEFINE_bool(
  'smoke',
  None,
  'Run every item at a tiny CPU size (default: on a CPU; --nosmoke forces the full sizes).',
)
_BUDGET_S = flags.DEFINE_float(
  'budget_s',
  420.0,
  'Seconds for the whole check: items not started by then are recorded as skipped.',
  lower_bound=0.0,
)

# Global batches tried, per device, largest first (full mode).
FULL_BATCHES = (64, 48, 32, 16, 8)
# cuDNN against XLA attention: the largest |difference| of the logits may be this share of the
# largest |logit| (bfloat16 has an 8-bit mantissa, a relative step of 2**-8 = 0.4%; a few roundings
# of different order add up to a few steps).
ATTENTION_TOLERANCE = 2e-2
# bfloat16 against float32 training: the final losses may differ by this share.
LOSS_TOLERANCE = 2e-2
STACKING_SKIPPED = 'skipped: stacking not implemented'


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What smoke and full mode differ in."""

  shape: str  # benchmark.apply_shape's layers,heads,d_model,seq,batch,vocab; '' = the config's
  batches: tuple[int, ...]  # global batches to try, largest first
  steps: int  # timed train steps
  warmup: int
  logits_batch: int  # rows of the cuDNN-vs-XLA batch
  loss_config: Callable[[], ml_collections.ConfigDict]  # the bfloat16-vs-float32 run's config
  loss_steps: int
  loss_documents: int  # data.max_documents of that run
  new_tokens: int  # decoding
  prompt_len: int


def sizes(smoke: bool) -> Sizes:
  if smoke:
    return Sizes('2,2,64,64,4,512', (4,), 3, 1, 2, tiny.get_config, 3, 60, 8, 8)
  n = jax.device_count()
  return Sizes(
    '', tuple(b * n for b in FULL_BATCHES), 10, 2, 8, default.get_config, 50, 400, 256, 128
  )


class Budget:
  """The wall time left of --budget_s, counted from the start of the script."""

  def __init__(self, seconds: float):
    self.seconds, self.start = seconds, time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def left(self) -> float:
    return self.seconds - self.elapsed()

  def skip_reason(self, needs_s: float = 0.0) -> str | None:
    if self.left() > needs_s:
      return None
    if needs_s and self.left() > 0:
      return (
        f'skipped: time budget: {self.left():.0f} s of --budget_s={self.seconds:g} left, and '
        f'this item needs about {needs_s:.0f} s'
      )
    return f'skipped: time budget: --budget_s={self.seconds:g} spent ({self.elapsed():.0f} s)'


def devices() -> dict:
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  return {
    'devices': [str(d) for d in jax.devices()],
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'device_count': jax.device_count(),
    'process_count': jax.process_count(),
    'platform_version': getattr(device.client, 'platform_version', None),
    'memory_bytes_limit': stats.get('bytes_limit'),
    'jax_version': jax.__version__,
    'jaxlib_version': jaxlib.__version__,
    'cpu_count': os.cpu_count(),
  }


def on_gpu() -> bool:
  return jax.default_backend() == 'gpu'


def gpt2_config(size: Sizes, medium: bool = False) -> ml_collections.ConfigDict:
  """GPT-2 small (or medium: 24 layers, d_model 1024, 16 heads) in bfloat16, cuDNN attention on a
  GPU and XLA's elsewhere, at the size's shape."""
  config = gpt2_small.get_config()
  if medium:
    config.model.update(n_layers=24, d_model=1024, n_heads=16, d_ff=4096)
  if size.shape:  # smoke: medium is the small shape twice as deep
    benchmark.apply_shape(config, size.shape)
    config.model.n_layers *= 2 if medium else 1
  config.model.update(dtype='bfloat16', attention_impl='cudnn' if on_gpu() else 'xla')
  config.train.grad_accum_steps = 1
  return config


def is_out_of_memory(e: Exception) -> bool:
  text = str(e)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def one_line(e: BaseException, limit: int = 500) -> str:
  text = ' '.join(f'{type(e).__name__}: {e}'.split())
  return text if len(text) <= limit else text[:limit] + ' ...'


def free_memory() -> None:
  """Drops compiled programs and what they hold, so the next attempt starts with free memory."""
  jax.clear_caches()
  gc.collect()


def largest_batch(
  run: Callable[[int], dict], batches: tuple[int, ...], fits: Callable[[int], str | None]
) -> dict:
  """run(batch) for the first of `batches` that runs without running out of memory; `fits(batch)`
  is a reason not to try a batch at all, or None. The attempts that failed are in 'attempts'."""
  attempts = []
  for batch in batches:
    reason = fits(batch)
    if reason is not None:
      attempts.append({'batch': batch, 'not_tried': reason})
      continue
    try:
      result = run(batch)
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      attempts.append({'batch': batch, 'out_of_memory': one_line(e, 300)})
      result = None
    if result is None:  # out of the except block: its traceback no longer holds the arrays
      free_memory()
      continue
    return {**result, 'batch_candidates': list(batches), 'attempts': attempts}
  return {
    'skipped': f'skipped: no batch of {list(batches)} fits in memory',
    'batch_candidates': list(batches),
    'attempts': attempts,
  }


def train_benchmark(size: Sizes, scan: bool, medium: bool = False, start_batch: int = 0) -> dict:
  config = gpt2_config(size, medium)
  config.model.scan_layers = scan
  batches = tuple(b for b in size.batches if not start_batch or b <= start_batch)
  limit = (jax.devices()[0].memory_stats() or {}).get('bytes_limit')

  def fits(batch: int) -> str | None:
    config.train.global_batch_size = batch
    model_config = configuration.model_config(config, config.tokenizer.vocab_size)
    estimate = sum(step_lib.memory_estimate(model_config, config.train).values())
    if limit and estimate > 1.5 * limit:
      return f'estimated {estimate / 2**30:.1f} GiB per device, over 1.5 x {limit / 2**30:.1f} GiB'
    return None

  def run(batch: int) -> dict:
    config.train.global_batch_size = batch
    return benchmark.bench_train(config, size.steps, size.warmup)

  result = largest_batch(run, batches, fits)
  return {
    'model': 'gpt2_medium' if medium else 'gpt2_small',
    'scan_layers': scan,
    'attention_impl': config.model.attention_impl,
    **result,
  }


def attention_numerics(size: Sizes) -> dict:
  """cuDNN against XLA attention: one model, one set of parameters, one batch of logits."""
  if not on_gpu():
    return {'skipped': 'skipped: no GPU (cuDNN attention needs an NVIDIA GPU)'}
  config = gpt2_config(size)
  xla = configuration.model_config(config, config.tokenizer.vocab_size)
  xla = dataclasses.replace(xla, attention_impl='xla')
  variants = {
    'xla': xla,
    'cudnn': dataclasses.replace(xla, attention_impl='cudnn'),
    'xla_float32': dataclasses.replace(xla, dtype='float32'),
  }
  params = jax.jit(lambda key: registry.init_params(registry.build(xla), key))(
    jax.random.key(config.seed)
  )
  ids_BxL = jax.random.randint(
    jax.random.key(config.seed + 1),
    (size.logits_batch, config.train.seq_len),
    0,
    xla.vocab_size,
    jnp.int32,
  )
  logits = {}
  for name, model_config in variants.items():
    model = registry.build(model_config)
    logits[name] = jax.jit(lambda p, x, m=model: m.apply({'params': p}, x).astype(jnp.float32))(
      params, ids_BxL
    )
  scale = float(jnp.max(jnp.abs(logits['xla'])))
  max_abs = float(jnp.max(jnp.abs(logits['cudnn'] - logits['xla'])))
  return {
    'shape': {
      'batch': size.logits_batch,
      'seq_len': config.train.seq_len,
      'n_layers': xla.n_layers,
      'd_model': xla.d_model,
      'n_heads': xla.n_heads,
      'vocab': xla.vocab_size,
    },
    'dtype': 'bfloat16',
    'logits_max_abs': scale,
    'max_abs_diff': max_abs,
    'mean_abs_diff': float(jnp.mean(jnp.abs(logits['cudnn'] - logits['xla']))),
    'relative_max_abs_diff': max_abs / scale,
    'tolerance': f'max |cudnn - xla| <= {ATTENTION_TOLERANCE:g} x max |xla logits|',
    'within_tolerance': max_abs <= ATTENTION_TOLERANCE * scale,
    # How far each bfloat16 run is from float32 XLA attention: the size of bfloat16's own error.
    'cudnn_vs_float32_max_abs_diff': float(
      jnp.max(jnp.abs(logits['cudnn'] - logits['xla_float32']))
    ),
    'xla_vs_float32_max_abs_diff': float(jnp.max(jnp.abs(logits['xla'] - logits['xla_float32']))),
  }


def loss_numerics(size: Sizes) -> dict:
  """The same training run (trainer.train_and_evaluate) in bfloat16 and in float32."""
  runs = {}
  for dtype in ('float32', 'bfloat16'):
    config = size.loss_config()
    config.tokenizer.kind = 'byte'
    config.model.dtype = dtype
    config.data.max_documents = size.loss_documents
    config.sample.max_new_tokens = 0
    steps = size.loss_steps
    config.train.update(
      steps=steps,
      warmup_steps=min(config.train.warmup_steps, steps // 5),
      log_every=1,  # train_loss: the last step's, not a mean over steps
      eval_every=steps,
      checkpoint_every=steps,
      eval_batches=2,
    )
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(io.StringIO()):
      metrics = trainer.train_and_evaluate(config, workdir, show_progress=False)
    runs[dtype] = {
      'train_loss': float(metrics['train_loss']),
      'eval_loss': float(metrics['eval_loss']),
    }
  f32, bf16 = runs['float32'], runs['bfloat16']
  relative = {
    f'relative_diff_{name}': abs(bf16[name] - f32[name]) / abs(f32[name])
    for name in ('train_loss', 'eval_loss')
  }
  return {
    'method': 'trainer.train_and_evaluate in a temporary workdir, the same seed, data and '
    'batches in both dtypes; the losses of the last step and of the final evaluation',
    'shape': {
      'n_layers': config.model.n_layers,
      'd_model': config.model.d_model,
      'seq_len': config.train.seq_len,
      'batch': config.train.global_batch_size,
      'attention_impl': config.model.attention_impl,
      'tokenizer': 'byte',
      'data': f'stdlib, first {size.loss_documents} documents',
    },
    'steps': size.loss_steps,
    'float32': f32,
    'bfloat16': bf16,
    **relative,
    'tolerance': f'|bf16 - f32| <= {LOSS_TOLERANCE:g} x f32, for both losses',
    'within_tolerance': all(v <= LOSS_TOLERANCE for v in relative.values()),
  }


def decode_benchmark(size: Sizes, batch: int) -> dict:
  config = gpt2_config(size)
  return benchmark.bench_decode(config, size.new_tokens, size.prompt_len, batch)


def attempt(name: str, budget: Budget, fn: Callable[[], dict], needs_s: float = 0.0) -> dict:
  """fn() with its wall time, unless the budget is spent; its error and traceback if it fails."""
  reason = budget.skip_reason(needs_s)
  if reason is not None:
    print(f'{name}: {reason}', file=sys.stderr)
    return {'skipped': reason}
  print(f'{name} ({budget.elapsed():.0f} s in) ...', file=sys.stderr, flush=True)
  start = time.perf_counter()
  try:
    result = fn()
  except Exception as e:  # pylint: disable=broad-except  # recorded; the other items still run
    if cli.DEBUG.value:
      raise
    result = {'error': one_line(e), 'traceback': traceback.format_exc().splitlines()[-30:]}
  if 'error' in result:
    free_memory()
  return {**result, 'wall_s': time.perf_counter() - start}


def default_out() -> str:
  slug = re.sub(r'[^a-z0-9]+', '_', jax.devices()[0].device_kind.lower()).strip('_')
  return os.path.join(REPO, 'experiments', 'results', f'accelerator_check_{slug}.json')


def check_writable(path: str) -> None:
  """Fails now, not after the whole check, when the JSON could not be written at `path`."""
  if os.path.isdir(path):
    raise UserError(f'--out={path} is a directory; give a file name')
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise UserError(f'--out={path}: cannot create {parent}: {e.strerror}') from None
  if not os.access(parent, os.W_OK):
    raise UserError(f'--out={path}: {parent} is not writable')


def summary(report: dict) -> list[str]:
  d = report['devices']
  lines = [
    f'accelerator check: {d["device_count"]} x {d["device_kind"]} ({d["backend"]}, jax '
    f'{d["jax_version"]}), {report["mode"]} mode, {report["wall_s"]:.0f} s -> {report["out"]}'
  ]

  def status(entry: dict) -> str | None:
    return entry.get('skipped') or (entry.get('error') and 'error: ' + entry['error'])

  for key, entry in report['train'].items():
    lines.append(
      f'train {key}: '
      + (
        status(entry)
        or f'batch {entry["batch"]} x {entry["seq_len"]}, {entry["tokens_per_s"]:,.0f} tokens/s, '
        f'step {entry["step_ms"]:.1f} ms, MFU {entry["mfu"]:.1%}, '
        + (
          'memory n/a' if entry['memory_mib'] is None else f'memory {entry["memory_mib"]:,.0f} MiB'
        )
        + f', compile {entry["compile_s"]:.1f} s'
      )
    )
  attention = report['numerics']['cudnn_vs_xla']
  lines.append(
    'numerics cudnn vs xla: '
    + (
      status(attention)
      or f'max |diff| {attention["max_abs_diff"]:.3g} of max |logit| '
      f'{attention["logits_max_abs"]:.3g} '
      f'({"within" if attention["within_tolerance"] else "OUTSIDE"} tolerance)'
    )
  )
  loss = report['numerics']['bf16_vs_f32_loss']
  lines.append(
    'numerics bf16 vs f32 loss: '
    + (
      status(loss)
      or f'{loss["steps"]} steps, train loss {loss["bfloat16"]["train_loss"]:.4f} vs '
      f'{loss["float32"]["train_loss"]:.4f} (relative {loss["relative_diff_train_loss"]:.1e}), '
      f'eval loss relative {loss["relative_diff_eval_loss"]:.1e} '
      f'({"within" if loss["within_tolerance"] else "OUTSIDE"} tolerance)'
    )
  )
  for key, entry in report['decode'].items():
    lines.append(
      f'decode {key}: '
      + (
        status(entry)
        or f'{entry["cached_tokens_per_s"]:,.1f} tokens/s with the cache, '
        f'{entry["uncached_tokens_per_s"]:,.1f} without'
      )
    )
  lines.append(f'stacking: {report["stacking"]["skipped"]}')
  return lines


def failures(report: dict) -> list[str]:
  found = []
  for section in ('train', 'numerics', 'decode'):
    found += [f'{section}.{k}' for k, entry in report[section].items() if 'error' in entry]
  return found


def main(argv: list[str]) -> None:
  cli.positional(argv)
  budget = Budget(_BUDGET_S.value)
  out = _OUT.value or default_out()
  check_writable(out)
  smoke = jax.default_backend() == 'cpu' if _SMOKE.value is None else _SMOKE.value
  size = sizes(smoke)
  report = {
    'mode': 'smoke' if smoke else 'full',
    'budget_s': budget.seconds,
    'devices': devices(),
    'train': {},
    'numerics': {},
    'decode': {},
  }
  train = report['train']
  for scan in (False, True):
    small = train.get('gpt2_small_scan_False', {})
    train[f'gpt2_small_scan_{scan}'] = attempt(
      f'train gpt2_small scan_layers={scan}',
      budget,
      lambda scan=scan, small=small: train_benchmark(size, scan, start_batch=small.get('batch', 0)),
    )
  report['numerics']['cudnn_vs_xla'] = attempt(
    'numerics cudnn vs xla', budget, lambda: attention_numerics(size)
  )
  report['numerics']['bf16_vs_f32_loss'] = attempt(
    'numerics bf16 vs f32 loss', budget, lambda: loss_numerics(size)
  )
  for batch in (1, 8):
    report['decode'][f'gpt2_small_batch_{batch}'] = attempt(
      f'decode batch {batch}', budget, lambda batch=batch: decode_benchmark(size, batch)
    )
  report['stacking'] = {'skipped': STACKING_SKIPPED}
  # GPT-2 medium, last: about 3 times small's work per token, so about 3 times its wall time.
  for scan in (True, False):
    small = train[f'gpt2_small_scan_{scan}']
    needs_s = 3 * small.get('wall_s', 0.0) if 'tokens_per_s' in small else 0.0
    train[f'gpt2_medium_scan_{scan}'] = attempt(
      f'train gpt2_medium scan_layers={scan}',
      budget,
      lambda scan=scan, small=small: train_benchmark(
        size, scan, medium=True, start_batch=small.get('batch', 0)
      ),
      needs_s,
    )
  report['wall_s'] = budget.elapsed()
  report['out'] = out
  with open(out, 'w') as f:
    json.dump(report, f, indent=1, default=str, allow_nan=True)
    f.write('\n')
  print('\n'.join(summary(report)))
  failed = failures(report)
  if failed:
    raise UserError(f'{len(failed)} item(s) failed: {", ".join(failed)}; their errors are in {out}')


if __name__ == '__main__':
  cli.run(main)
