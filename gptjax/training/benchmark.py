"""How fast a config trains or decodes on this machine: what python -m gptjax.bench reports.

bench_train compiles the train step training runs (gptjax.training.step.compile_train_step, with
the config's optimizer, sharding and gradient accumulation), feeds it random token windows, and
after `warmup` steps times `steps` steps one by one. It reports compile time, step time (median
and spread), tokens/s, model FLOPs per token (gptjax.models.accounting, the count MFU and the
scaling-law code share), achieved FLOP/s and MFU against the device's peak: a data-sheet figure on
accelerators, on CPU the measured rate of a large fp32 matmul (reported beside the result).

bench_decode times greedy decoding with and without the key/value cache (gptjax.decoding.sampling).
apply_shape sets a quick model and batch shape; format_report turns either report into lines.
"""

import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections

from gptjax import configuration
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.decoding import sampling
from gptjax.errors import UserError
from gptjax.models import accounting, registry
from gptjax.models.gpt import GPT
from gptjax.training import sharding, step
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import init_state

# The shapes (layers, heads, d_model, seq, batch, vocab) of the peer comparisons
# (experiments/bench_vs_torch.py, experiments/bench_vs_nanodo.py).
COMPARISON_SHAPES = (
  (4, 4, 128, 128, 16, 4096),
  (4, 4, 256, 256, 16, 4096),
  (6, 6, 384, 256, 8, 8192),
  (2, 2, 64, 128, 32, 512),
)


def apply_shape(config: ml_collections.ConfigDict, shape: str) -> None:
  """Sets the model and batch shape from 'layers,heads,d_model,seq,batch,vocab'."""
  try:
    layers, heads, d_model, seq, batch, vocab = (int(v) for v in shape.split(','))
  except ValueError:
    raise UserError(
      f'--shape={shape!r}: expected six integers, layers,heads,d_model,seq,batch,vocab'
    ) from None
  config.model.update(n_layers=layers, n_heads=heads, d_model=d_model, d_ff=4 * d_model, n_ctx=seq)
  config.train.update(seq_len=seq, global_batch_size=batch, grad_accum_steps=1)
  config.tokenizer.vocab_size = vocab


def bench_train(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2) -> dict:
  """Times the train step on random tokens; the vocabulary is config.tokenizer.vocab_size.

  Any architecture: BERT and the encoder-decoder get random rows of their width, and the byte
  tokenizer's special ids (0-5) stand in for [CLS], [SEP] and padding. Tokens per step count the
  rows' predicted positions: seq_len per row (the target, for the encoder-decoder).
  """
  configuration.validate(config, jax.device_count(), jax.process_count())
  specials = tokenizer_lib.ByteTokenizer()
  model = registry.build(
    configuration.model_config(config, config.tokenizer.vocab_size), pad_id=specials.pad_id
  )
  optimizer = make_optimizer(config.train, registry.learning_rate_multipliers(model))
  mesh = sharding.make_mesh()
  abstract_state = jax.eval_shape(lambda: init_state(model, optimizer, config.seed))
  state_shardings = sharding.state_shardings(
    abstract_state, mesh, fsdp=config.train.sharding == 'fsdp'
  )
  batch_size, seq_len = config.train.global_batch_size, config.train.seq_len
  start = time.perf_counter()
  objective = registry.get(config.model.architecture).objective(model, config, specials)
  step_fn = step.compile_train_step(
    model, objective, optimizer, config, mesh, abstract_state, state_shardings
  )
  compile_s = time.perf_counter() - start
  memory = step_fn.memory_analysis()  # XLA's count for the compiled step, per device, if any
  memory_mib = (
    None if memory is None else (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / 2**20
  )
  state = jax.jit(
    lambda: init_state(model, optimizer, config.seed), out_shardings=state_shardings
  )()
  batch_BxW = jax.device_put(
    jax.random.randint(
      jax.random.key(config.seed),
      (batch_size, registry.get(config.model.architecture).row_width(config)),
      0,
      config.tokenizer.vocab_size,
      jnp.int32,
    ),
    sharding.batch_sharding(mesh),
  )
  for _ in range(warmup):
    state, metrics = step_fn(state, batch_BxW)
  jax.block_until_ready(state)
  step_s = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch_BxW)
    jax.block_until_ready(state)
    step_s.append(time.perf_counter() - start)
  median_s = statistics.median(step_s)
  tokens_per_s = batch_size * seq_len / median_s
  flops_per_token = accounting.flops_per_token(model.config, seq_len)
  peak_per_device, peak_source = accounting.peak_flops_per_s(config.model.dtype)
  peak = peak_per_device * jax.device_count()
  return {
    'mode': 'train',
    'architecture': config.model.architecture,
    'n_layers': config.model.n_layers,
    'n_heads': config.model.n_heads,
    'd_model': config.model.d_model,
    'seq_len': seq_len,
    'batch': batch_size,
    'vocab': model.config.vocab_size,
    'dtype': config.model.dtype,
    'params': accounting.count_params(model.config).total,
    'compile_s': compile_s,
    'step_ms': 1e3 * median_s,
    'step_ms_min': 1e3 * min(step_s),
    'step_ms_max': 1e3 * max(step_s),
    'tokens_per_s': tokens_per_s,
    'flops_per_token': flops_per_token,
    'flops_per_s': flops_per_token * tokens_per_s,
    'peak_flops_per_s': peak,
    'peak_source': peak_source,
    'mfu': flops_per_token * tokens_per_s / peak,
    'memory_mib': memory_mib,
    'memory_estimate_mib': sum(step.memory_estimate(model.config, config.train).values()) / 2**20,
    'final_loss': float(metrics['train_loss']),
    **_machine(),
  }


def bench_decode(
  config: ml_collections.ConfigDict, new_tokens: int, prompt_len: int, batch_size: int = 1
) -> dict:
  """Greedy decode speed of config's model (random weights decode as fast as trained ones), with
  n_ctx raised to fit the prompt and the new tokens if needed. GPT only."""
  if not registry.get(config.model.architecture).language_model:
    raise UserError(
      f'decode mode times language models (GPT configs); model.architecture is '
      f'{config.model.architecture!r}'
    )
  config.model.n_ctx = max(config.model.n_ctx, prompt_len + new_tokens)
  model = GPT(configuration.model_config(config, config.tokenizer.vocab_size))
  params = jax.jit(model.init)(
    jax.random.key(config.seed), jnp.zeros((1, config.model.n_ctx), jnp.int32)
  )['params']
  result = sampling.benchmark_decode(model, params, new_tokens, batch_size, prompt_len, config.seed)
  return {'mode': 'decode', **result, **_machine()}


def _machine() -> dict:
  # Other processes slow a CPU run down: the load says how busy the machine was.
  return {
    'device': jax.devices()[0].device_kind,
    'device_count': jax.device_count(),
    'cpu_count': os.cpu_count(),
    'load_average_1m': os.getloadavg()[0],
  }


def format_report(result: dict) -> str:
  """The report of bench_train or bench_decode as a few readable lines."""
  if result['mode'] == 'decode':
    return (
      f'decode {result["new_tokens"]} tokens x {result["batch_size"]}: '
      f'{result["cached_tokens_per_s"]:,.1f} tokens/s with the cache, '
      f'{result["uncached_tokens_per_s"]:,.1f} without ({result["speedup"]:.1f}x)'
    )
  return '\n'.join(
    [
      f'model      {result["n_layers"]} layers, {result["n_heads"]} heads, d_model '
      f'{result["d_model"]}, vocab {result["vocab"]:,}, {result["params"]:,} parameters, '
      f'{result["dtype"]}',
      f'batch      {result["batch"]} x {result["seq_len"]} tokens on {result["device_count"]} x '
      f'{result["device"]}',
      f'compile    {result["compile_s"]:.2f} s',
      f'step       {result["step_ms"]:.1f} ms median ({result["step_ms_min"]:.1f}-'
      f'{result["step_ms_max"]:.1f})',
      f'throughput {result["tokens_per_s"]:,.0f} tokens/s, {result["flops_per_token"]:,.0f} '
      f'FLOPs/token, {result["flops_per_s"] / 1e9:,.1f} GFLOP/s',
      f'MFU        {result["mfu"]:.1%} of {result["peak_flops_per_s"] / 1e9:,.1f} GFLOP/s '
      f'({result["peak_source"]})',
      f'memory     {result["memory_estimate_mib"]:,.1f} MiB per device estimated '
      '(accounting.memory_estimate), '
      + (
        'no count from XLA'
        if result['memory_mib'] is None
        else f"{result['memory_mib']:,.1f} MiB by XLA's count"
      ),
    ]
  )
