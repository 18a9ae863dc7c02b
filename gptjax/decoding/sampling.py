"""Sampling with a key/value cache: prefill the prompts in parallel, then one token a step.

Prompts of different lengths share a batch right-padded in a (B, n_ctx) buffer; each row keeps its
own positions, so it gets the tokens it would get alone. The whole of decoding is one jitted
function whose shapes depend only on the batch size and n_ctx, with the number of new tokens, the
temperature and EOS as traced values: any prompt and any length reuse one compilation. For the
same reason the prefill runs over fixed chunks of PREFILL_CHUNK positions: a prompt up to that
long takes one forward pass, a longer one a pass per chunk, never a compilation of its own.

Each step: logits / temperature, keep the top_k most likely tokens, then the nucleus of those (the
fewest whose probability adds up to top_p), and sample with the key fold_in(rng, step); temperature
0 is greedy. A row stops after EOS, after max_new_tokens, or when its context is full.
"""

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError

PREFILL_CHUNK = 256  # positions per prefill forward pass (all of n_ctx when that is shorter)


def prefill(
  model: nn.Module, params, tokens_BxS: jax.Array, lengths_B: jax.Array, chunk: int = PREFILL_CHUNK
):
  """The key/value cache of tokens_BxS (S = n_ctx) up to position max(lengths_B) - 1 at least.

  Forward passes over `chunk` positions at a time; the logits are not needed. Slots past a row's
  prompt hold keys and values of padding until decoding writes over them, and are never attended
  before then.
  """
  batch, n_ctx = tokens_BxS.shape
  chunk = min(chunk, n_ctx)

  def forward(variables: dict, start) -> dict:
    ids_Bxchunk = jax.lax.dynamic_slice_in_dim(tokens_BxS, start, chunk, axis=1)
    _, variables = model.apply(
      variables, ids_Bxchunk, cache_start_B=jnp.full(batch, start, jnp.int32), mutable=['cache']
    )
    return variables['cache']

  empty = jax.eval_shape(forward, {'params': params}, 0)
  cache = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), empty)
  n_chunks = (jnp.max(lengths_B) + chunk - 1) // chunk
  # The last chunk ends at n_ctx; where it overlaps the one before, it recomputes the same entries.
  return jax.lax.fori_loop(
    0,
    n_chunks,
    lambda i, cache: forward(
      {'params': params, 'cache': cache}, jnp.minimum(i * chunk, n_ctx - chunk)
    ),
    cache,
  )


def decode_step(
  model: nn.Module, params, cache, token_B: jax.Array, position_B: jax.Array
) -> tuple[jax.Array, dict]:
  """Logits (B, V) of the token after token_B, which sits at position_B; it joins the cache."""
  logits_Bx1xV, variables = model.apply(
    {'params': params, 'cache': cache},
    token_B[:, None],
    cache_start_B=position_B,
    mutable=['cache'],
  )
  return logits_Bx1xV[:, 0], variables['cache']


def filter_logits(logits_BxV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """-inf for tokens outside the top_k most likely (0 = all), then outside the nucleus: the fewest
  most likely of those whose probability (renormalised over them) adds up to top_p. Ties at either
  cut-off are kept."""
  if not top_k and top_p >= 1:
    return logits_BxV
  descending_Bxcandidates = (
    jax.lax.top_k(logits_BxV, top_k)[0] if top_k else -jnp.sort(-logits_BxV, axis=-1)
  )
  cutoff_Bx1 = descending_Bxcandidates[:, -1:]
  if top_p < 1:
    probs_Bxcandidates = jax.nn.softmax(descending_Bxcandidates, axis=-1)
    mass_before_Bxcandidates = jnp.cumsum(probs_Bxcandidates, axis=-1) - probs_Bxcandidates
    cutoff_Bx1 = jnp.min(
      jnp.where(mass_before_Bxcandidates < top_p, descending_Bxcandidates, jnp.inf),
      axis=-1,
      keepdims=True,
    )
  return jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)


def next_token(
  logits_BxV: jax.Array, rng: jax.Array, temperature, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
  """One token per row: the argmax if temperature is 0, else a sample of the filtered softmax."""
  sample = lambda: jax.random.categorical(
    rng, filter_logits(logits_BxV / temperature, top_k, top_p)
  )
  return jax.lax.cond(temperature > 0, sample, lambda: jnp.argmax(logits_BxV, axis=-1))


@functools.partial(jax.jit, static_argnames=('model', 'top_k', 'top_p', 'use_cache'))
def _decode(
  model: nn.Module,
  params,
  tokens_BxS: jax.Array,
  lengths_B: jax.Array,
  max_new_tokens,
  rng: jax.Array,
  temperature,
  eos_id,
  top_k: int,
  top_p: float,
  use_cache: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """tokens_BxS with new tokens after each row's first lengths_B[b], and each row's new length.

  use_cache=False re-runs the model on the whole buffer for every token: the baseline of the
  decode benchmark.
  """
  batch, n_ctx = tokens_BxS.shape
  rows_B = jnp.arange(batch)
  cache = prefill(model, params, tokens_BxS, lengths_B) if use_cache else None

  def unfinished(carry) -> jax.Array:
    step, _, _, _, done_B = carry
    return (step < max_new_tokens) & ~jnp.all(done_B)

  def step_fn(carry):
    step, tokens_BxS, cache, last_B, done_B = carry  # last_B: position of each row's last token
    if use_cache:
      logits_BxV, cache = decode_step(model, params, cache, tokens_BxS[rows_B, last_B], last_B)
    else:
      logits_BxV = model.apply({'params': params}, tokens_BxS)[rows_B, last_B]
    token_B = next_token(logits_BxV, jax.random.fold_in(rng, step), temperature, top_k, top_p)
    last_B = jnp.where(done_B, last_B, last_B + 1)  # finished rows keep their last token
    tokens_BxS = tokens_BxS.at[rows_B, last_B].set(
      jnp.where(done_B, tokens_BxS[rows_B, last_B], token_B)
    )
    done_B = done_B | (token_B == eos_id) | (last_B == n_ctx - 1)
    return step + 1, tokens_BxS, cache, last_B, done_B

  carry = (jnp.zeros((), jnp.int32), tokens_BxS, cache, lengths_B - 1, lengths_B >= n_ctx)
  _, tokens_BxS, _, last_B, _ = jax.lax.while_loop(unfinished, step_fn, carry)
  return tokens_BxS, last_B + 1


def generate_batch(
  model: nn.Module,
  params,
  prompts: list[list[int]],
  max_new_tokens: int,
  rng: jax.Array,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
) -> list[list[int]]:
  """Continues each prompt by up to max_new_tokens (fewer at EOS, which is left out, or when the
  context fills up). Every prompt needs 1 to n_ctx - 1 tokens."""
  n_ctx = model.config.n_ctx
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p={top_p} must be in (0, 1]')
  tokens_BxS = np.zeros((len(prompts), n_ctx), np.int32)
  for row, prompt in zip(tokens_BxS, prompts):
    if not 0 < len(prompt) < n_ctx:
      raise ValueError(
        f'a prompt of {len(prompt)} tokens; prompts need 1 to n_ctx - 1 = {n_ctx - 1}'
      )
    row[: len(prompt)] = prompt
  lengths_B = np.array([len(p) for p in prompts], np.int32)
  tokens_BxS, ends_B = jax.device_get(
    _decode(
      model,
      params,
      tokens_BxS,
      lengths_B,
      max_new_tokens,
      rng,
      temperature,
      -1 if eos_id is None else eos_id,
      min(top_k, model.config.vocab_size),
      top_p,
    )
  )
  continuations = []
  for row, start, end in zip(tokens_BxS, lengths_B, ends_B):
    new_ids = row[start:end].tolist()
    continuations.append(new_ids[: new_ids.index(eos_id)] if eos_id in new_ids else new_ids)
  return continuations


def generate(
  model: nn.Module,
  params,
  prompt_ids: list[int],
  max_new_tokens: int,
  rng: jax.Array,
  temperature: float = 1.0,
  top_k: int = 0,
  eos_id: int | None = None,
  top_p: float = 1.0,
) -> list[int]:
  """generate_batch for one prompt, whose last n_ctx - 1 tokens are kept."""
  prompt_ids = prompt_ids[-(model.config.n_ctx - 1) :]
  return generate_batch(
    model, params, [prompt_ids], max_new_tokens, rng, temperature, top_k, top_p, eos_id
  )[0]


def sample_texts(
  model: nn.Module,
  params,
  tokenizer: Tokenizer,
  prompt: str,
  num_samples: int,
  max_new_tokens: int,
  rng: jax.Array,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
) -> list[str]:
  """num_samples continuations of the text `prompt` (after BOS, as documents start in training),
  each with the prompt in front."""
  ids = tokenizer.encode(prompt)
  if not ids:
    raise UserError('the prompt is empty after tokenization')
  prompt_ids = [tokenizer.bos_id, *ids]
  n_ctx = model.config.n_ctx
  if len(prompt_ids) >= n_ctx:
    raise UserError(
      f'the prompt is {len(prompt_ids)} tokens with BOS, but the context holds '
      f'{n_ctx}: it must be at most {n_ctx - 1} to leave room for new tokens'
    )
  continuations = generate_batch(
    model,
    params,
    [prompt_ids] * num_samples,
    max_new_tokens,
    rng,
    temperature,
    top_k,
    top_p,
    tokenizer.eos_id,
  )
  return [prompt + tokenizer.decode(new_ids) for new_ids in continuations]


def benchmark_decode(
  model: nn.Module,
  params,
  new_tokens: int = 512,
  batch_size: int = 1,
  prompt_len: int = 128,
  seed: int = 0,
) -> dict:
  """Greedy decoding speed, with the cache and without it (the model re-run on the whole buffer
  each token), compilation excluded; the prefill counts towards the cached time."""
  config = model.config
  if prompt_len + new_tokens > config.n_ctx:
    raise ValueError(f'prompt_len {prompt_len} + new_tokens {new_tokens} > n_ctx {config.n_ctx}')
  rng = jax.random.key(seed)
  tokens_BxS = (
    jnp.zeros((batch_size, config.n_ctx), jnp.int32)
    .at[:, :prompt_len]
    .set(jax.random.randint(rng, (batch_size, prompt_len), 0, config.vocab_size))
  )
  lengths_B = jnp.full(batch_size, prompt_len, jnp.int32)
  result = {
    'new_tokens': new_tokens,
    'batch_size': batch_size,
    'prompt_len': prompt_len,
    'n_ctx': config.n_ctx,
    'n_layers': config.n_layers,
    'd_model': config.d_model,
    'n_heads': config.n_heads,
    'vocab_size': config.vocab_size,
    'params': sum(leaf.size for leaf in jax.tree.leaves(params)),
    'device': jax.devices()[0].device_kind,
  }
  outputs = {}
  for name, use_cache in (('cached', True), ('uncached', False)):
    decode = lambda n: _decode(
      model, params, tokens_BxS, lengths_B, n, rng, 0.0, -1, top_k=0, top_p=1.0, use_cache=use_cache
    )
    jax.block_until_ready(decode(1))  # compiles; the number of new tokens is a traced value
    start = time.perf_counter()
    outputs[name] = jax.block_until_ready(decode(new_tokens))
    seconds = time.perf_counter() - start
    result[f'{name}_s'] = seconds
    result[f'{name}_tokens_per_s'] = batch_size * new_tokens / seconds
  result['speedup'] = result['cached_tokens_per_s'] / result['uncached_tokens_per_s']
  result['same_tokens'] = bool(jnp.array_equal(outputs['cached'][0], outputs['uncached'][0]))
  return result
