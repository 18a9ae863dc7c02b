"""Parameter and FLOP accounting, shared by training (MFU), benchmarks and scaling-law fits.

Conventions (Kaplan et al. 2020, "Scaling Laws for Neural Language Models"):
  - N, the non-embedding parameter count, leaves out the token and position embedding tables and an
    untied output projection (the vocabulary-sized matrices); it keeps biases and LayerNorm
    parameters.
  - Training FLOPs per token = 6 N (forward 2N, backward 4N) plus the attention term
    12 * n_layers * n_ctx * d_model: QK^T and AV cost 2 * n_ctx * d_model each per layer and token
    forward (counting the full L x L product, as PaLM and nanoGPT do), times 3 for forward +
    backward.
    This is what MFU uses.
  - Scaling-law compute C uses one of COMPUTE_CONVENTIONS (6ND by default), which follow the
    papers the fits come from: Kaplan et al.'s attention term counts 2 * n_ctx * d_model per layer
    and token forward, half the term above.
"""

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.models import registry
from gptjax.models.config import ModelConfig
from gptjax.models.losses import default_chunk_tokens
from gptjax.models.ops import matmul


@dataclasses.dataclass(frozen=True)
class ParamCount:
  total: int
  non_embedding: int  # Kaplan's N


def abstract_params(config: ModelConfig):
  """Parameter shapes and dtypes without allocating them."""
  return jax.eval_shape(lambda: registry.init_params(registry.build(config), jax.random.key(0)))


def count_params(config: ModelConfig) -> ParamCount:
  """All parameters, and those outside the embedding tables (every nn.Embed and the learned
  position table 'wpe') and an untied output projection 'lm_head'."""
  params = abstract_params(config)
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    size = int(np.prod(leaf.shape))
    total += size
    keys = [entry.key for entry in path]
    if keys[-1] == 'embedding' or 'wpe' in keys or 'lm_head' in keys:
      embedding += size
  return ParamCount(total=total, non_embedding=total - embedding)


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
  """Training (forward + backward) FLOPs per token: 6N + 12 n_layers seq_len d_model (for an
  encoder-decoder, counting encoder and decoder layers alike: an estimate)."""
  seq_len = config.n_ctx if seq_len is None else seq_len
  n = count_params(config).non_embedding
  return 6 * n + 12 * (config.n_layers + config.n_encoder_layers) * seq_len * config.d_model


def activations_per_layer(config: ModelConfig, micro_batch: int, seq_len: int) -> tuple[int, int]:
  """(all, kept) float32 elements of one block's activations for one micro-batch: all that the
  backward pass of the block needs, and what model.remat keeps of them between the forward and
  the backward pass (the rest is recomputed block by block).

  all follows Korthikanti et al. 2022 (no recomputation): tokens * d_model * (34 + 5 * n_heads *
  seq / d_model) bytes at 16 bits, i.e. half as many elements. kept: 'none' keeps all; 'full'
  the block's input, tokens * d_model; 'dots_saveable' the input and every matmul's output (q, k
  and v, the attention logits, the attention output, its projection, both MLP products), tokens *
  (7 d_model + d_ff + n_heads * seq).
  """
  tokens, d_model = micro_batch * seq_len, config.d_model
  all_elements = int(tokens * d_model * (34 + 5 * config.n_heads * seq_len / d_model) / 2)
  kept = {
    'none': all_elements,
    'full': tokens * d_model,
    'dots_saveable': tokens * (7 * d_model + config.d_ff + config.n_heads * seq_len),
  }[config.remat]
  return all_elements, kept


def memory_estimate(
  config: ModelConfig, micro_batch: int, seq_len: int, fsdp_shards: int = 1
) -> dict[str, int]:
  """Rough bytes per device for training: parameters, their gradients, AdamW's two moments, and
  the activations kept for the backward pass of one micro-batch of `micro_batch` sequences.

  Activations (activations_per_layer): at the peak, the start of the backward pass of the last
  block, the other n_layers - 1 blocks hold what model.remat keeps and that block holds all of its
  activations: (n_layers - 1) * kept + all, n_layers * all without recomputation. They are
  counted at 32 bits whatever the compute dtype, because the models keep the activations between
  products in float32 (layers.py); plus the logits of one chunk of the loss.
  """
  param_bytes = jnp.dtype(config.param_dtype).itemsize
  n_params = count_params(config).total
  tokens = micro_batch * seq_len
  all_elements, kept = activations_per_layer(config, micro_batch, seq_len)
  return {
    'params': n_params * param_bytes // fsdp_shards,
    'grads': n_params * param_bytes // fsdp_shards,
    'optimizer': 2 * n_params * param_bytes // fsdp_shards,
    # The loss holds float32 logits and their gradient for one chunk of tokens at a time.
    'activations': int(
      ((config.n_layers - 1) * kept + all_elements) * 4
      + 2 * min(tokens, default_chunk_tokens(config.vocab_size)) * config.vocab_size * 4
    ),
  }


# Dense peak FLOP/s per chip from vendor data sheets: {device_kind substring: {dtype: FLOP/s}}.
# The first substring (in this order) found in jax.devices()[0].device_kind wins.
ACCELERATOR_PEAK_FLOPS = {
  # TPUs publish bf16 only; fp32 matmuls run as several bf16 passes, so MFU is against bf16.
  'TPU v6': {'bfloat16': 918e12},
  'TPU v5p': {'bfloat16': 459e12},
  'TPU v5': {'bfloat16': 197e12},  # v5e ("TPU v5 lite")
  'TPU v4': {'bfloat16': 275e12},
  'H200': {'bfloat16': 989e12, 'float32': 67e12},
  'H100': {'bfloat16': 989e12, 'float32': 67e12},  # SXM; fp32 without TF32
  'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
}


def peak_flops_per_s(dtype: str = 'float32') -> tuple[float, str]:
  """(peak FLOP/s of one device, where the number came from).

  Accelerators use the table above; on CPU (or an unknown device) the peak is measured: the rate of
  a large matmul in `dtype` (float32 accumulation, as the models multiply) on this machine, which
  is the best a dense model could do here.
  """
  kind = jax.devices()[0].device_kind
  for name, peaks in ACCELERATOR_PEAK_FLOPS.items():
    if name in kind:
      if dtype in peaks:
        return peaks[dtype], f'{name} {dtype} data sheet'
      return peaks['bfloat16'], f'{name} bfloat16 data sheet'
  return measured_matmul_flops_per_s(dtype=dtype), f'measured {dtype} matmul on {kind}'


@functools.cache
def measured_matmul_flops_per_s(
  size: int = 1024, repeats: int = 10, dtype: str = 'float32'
) -> float:
  """The best rate of `repeats` timed size x size matmuls with operands in `dtype`: a peak, so
  the fastest run (the least disturbed by other processes) counts."""
  a = jnp.ones((size, size), dtype)
  product = jax.jit(lambda x: matmul('ij,jk->ik', x, x, dtype))
  product(a).block_until_ready()
  fastest = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    product(a).block_until_ready()
    fastest = min(fastest, time.perf_counter() - start)
  return 2 * size**3 / fastest


# Training-compute conventions for scaling-law results; every result records the one it used.
# The attention and embedding variants count per token and, like 6N, triple the forward FLOPs for
# forward + backward.
COMPUTE_CONVENTIONS = {
  '6ND': 'C = 6 N D (Kaplan et al. 2020, Hoffmann et al. 2022): the non-embedding matmuls, '
  '2N forward and 4N backward per token',
  '6ND+attn': "C = (6 N + 6 n_layers seq_len d_model) D: plus Kaplan et al.'s attention term, "
  '2 n_layers n_ctx d_model per token forward',
  '6ND+attn+embed': 'C = (6 N + 6 n_layers seq_len d_model + 12 vocab_size d_model) D: plus the '
  'embedding and logit matmuls, 2 vocab_size d_model each per token forward, '
  'as Hoffmann et al. 2022 (appendix F) count them',
}


def training_compute(
  config: ModelConfig, tokens: float, seq_len: int | None = None, convention: str = '6ND'
) -> float:
  """Training FLOPs C of `tokens` tokens of training under one of COMPUTE_CONVENTIONS."""
  if convention not in COMPUTE_CONVENTIONS:
    raise ValueError(
      f'unknown compute convention {convention!r}; use one of {", ".join(COMPUTE_CONVENTIONS)}'
    )
  seq_len = config.n_ctx if seq_len is None else seq_len
  per_token = 6 * count_params(config).non_embedding
  if convention in ('6ND+attn', '6ND+attn+embed'):
    per_token += 6 * config.n_layers * seq_len * config.d_model
  if convention == '6ND+attn+embed':
    per_token += 12 * config.vocab_size * config.d_model
  return per_token * tokens


@dataclasses.dataclass(frozen=True)
class ModelShape:
  n_layers: int
  d_model: int
  n_heads: int
  d_ff: int

  @property
  def approx_non_embedding(self) -> int:
    """Kaplan et al.'s N ~ 12 n_layers d_model^2 (d_ff = 4 d_model); count_params is exact."""
    return 12 * self.n_layers * self.d_model**2


def propose_shape(target_n: float, aspect_ratio: float = 32.0, head_dim: int = 16) -> ModelShape:
  """A GPT shape with about `target_n` non-embedding parameters and d_model / n_layers near
  `aspect_ratio`.

  Kaplan et al. (2020, fig. 5) found the loss at fixed N within a few percent over aspect ratios
  of about 10 to 200, so any sane ratio will do; a fixed one makes a ladder of sizes that grow in
  depth and width together. The depth is (N / (12 aspect_ratio^2))^(1/3) rounded (at least 1), the
  width the multiple of head_dim that brings 12 n_layers d_model^2 closest to N; d_ff is 4 d_model.
  """
  if target_n <= 0 or aspect_ratio <= 0 or head_dim <= 0:
    raise ValueError('target_n, aspect_ratio and head_dim must be positive')
  n_layers = max(1, round((target_n / (12 * aspect_ratio**2)) ** (1 / 3)))
  width = math.sqrt(target_n / (12 * n_layers)) / head_dim
  d_model = min(
    {head_dim * max(1, math.floor(width)), head_dim * max(1, math.ceil(width))},
    key=lambda d: abs(math.log(12 * n_layers * d**2 / target_n)),
  )
  return ModelShape(n_layers, d_model, d_model // head_dim, 4 * d_model)


@dataclasses.dataclass(frozen=True)
class BudgetRun:
  n: float  # non-embedding parameters
  tokens: int  # D: a whole number of steps of tokens
  steps: int


def runs_for_budget(
  compute: float, n_params: list[float], batch_size: int, seq_len: int
) -> list[BudgetRun]:
  """For a budget of C = 6 N D FLOPs, the tokens D = C / (6 N) of each model size N, rounded to
  whole optimizer steps of batch_size * seq_len tokens (at least one)."""
  tokens_per_step = batch_size * seq_len
  runs = []
  for n in n_params:
    steps = max(1, round(compute / (6 * n) / tokens_per_step))
    runs.append(BudgetRun(n=n, tokens=steps * tokens_per_step, steps=steps))
  return runs
