"""Generating targets with the encoder-decoder Transformer: greedy decoding and beam search.

Both encode the source once, then decode one token per step with the decoder's key/value cache
(gptjax/encoder_decoder.py): the first step feeds BOS at position 0 and creates the cache,
including each cross-attention's projection of the memory, which every later step reuses; step t
feeds the token chosen at step t - 1 at position t. The steps after the first run in a
lax.while_loop that stops once every row (every beam) has produced EOS, or after max_len tokens.
The whole of decoding is one jitted function per batch shape, max_len and beam size; the token
ids and the length penalty are traced values.

Beam search (as the paper uses it: beam 4, GNMT length penalty alpha 0.6) keeps beam_size
hypotheses per row, flattened to B * beam_size rows for the decoder. Each step ranks every
continuation of every beam by its log-probability divided by ((5 + length) / 6) ** alpha (length
counting the tokens written, EOS included) and keeps the best beam_size per row. A finished beam
competes with its score frozen, as a single continuation (pad, no new log-probability), so it
stays until better hypotheses push it out. The answer is the best-scoring beam, finished or not.

Costs, per step: the decoder on one token per beam; its self-attention reads all n_ctx cache slots
(masked past the step), which keeps the shapes fixed; and beam search copies the self-attention
cache along the selected parent beams, a read and write of the same size as that attention's. The
memory's keys and values are the same for every beam of a row, so they are never reordered; the
memory is repeated per beam once, before the first step. Rows that finish early are carried along
(masked) until the batch is done.

Returned ids: the tokens after BOS up to EOS (excluded), padded with pad_id to (B, max_len).
pad_id is therefore never chosen as a token (unless it is also EOS, as in GPT-2's vocabulary).

Shapes as in gptjax/__init__.py: B source rows, N = B * beams decoder rows, S source positions,
T = max_len output positions, D model width, V vocabulary.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.models.layers import padding_mask


@functools.partial(jax.jit, static_argnames=('model', 'max_len'))
def greedy(
  model: nn.Module,
  params,
  source_BxS: jax.Array,
  max_len: int,
  bos_id: int,
  eos_id: int,
  pad_id: int,
) -> jax.Array:
  """The most likely next token at every step: ids (B, max_len)."""
  _check(model, max_len)
  batch = source_BxS.shape[0]
  memory_BxSxD, memory_mask_Bx1xS = _encode(model, params, source_BxS)

  def choose(step, logits_BxV, ids_BxT, done_B):
    """Writes the argmax at column `step`; rows already done write pad."""
    token_B = jnp.where(done_B, pad_id, jnp.argmax(_log_probs(logits_BxV, pad_id, eos_id), axis=-1))
    done_B = done_B | (token_B == eos_id)
    return token_B, ids_BxT.at[:, step].set(jnp.where(done_B, pad_id, token_B)), done_B

  def unfinished(carry) -> jax.Array:
    step, _, _, _, done_B = carry
    return (step < max_len) & ~jnp.all(done_B)

  def step_fn(carry):
    step, cache, token_B, ids_BxT, done_B = carry
    logits_BxV, cache = _decode_step(
      model, params, cache, token_B, step, memory_BxSxD, memory_mask_Bx1xS
    )
    return step + 1, cache, *choose(step, logits_BxV, ids_BxT, done_B)

  logits_BxV, cache = _decode_step(
    model, params, None, jnp.full(batch, bos_id, jnp.int32), 0, memory_BxSxD, memory_mask_Bx1xS
  )
  token_B, ids_BxT, done_B = choose(
    0, logits_BxV, jnp.full((batch, max_len), pad_id, jnp.int32), jnp.zeros(batch, bool)
  )
  carry = (jnp.ones((), jnp.int32), cache, token_B, ids_BxT, done_B)
  return jax.lax.while_loop(unfinished, step_fn, carry)[3]


def beam_search(
  model: nn.Module,
  params,
  source_BxS: jax.Array,
  max_len: int,
  beam_size: int,
  bos_id: int,
  eos_id: int,
  pad_id: int,
  length_penalty: float = 0.6,
) -> jax.Array:
  """The best of beam_size hypotheses per row, ranked by log-probability / GNMT length penalty
  ((5 + length) / 6) ** length_penalty: ids (B, max_len)."""
  ids_BxT, _ = _beam_search(
    model, params, source_BxS, max_len, beam_size, bos_id, eos_id, pad_id, length_penalty
  )
  return ids_BxT


def _check(model: nn.Module, max_len: int, beam_size: int = 1) -> None:
  if not 0 < max_len <= model.config.n_ctx:
    raise ValueError(f'max_len {max_len} must be in 1..n_ctx ({model.config.n_ctx})')
  # Pad is never a candidate, so the first step has vocab_size - 1 distinct continuations.
  if not 0 < beam_size < model.config.vocab_size:
    raise ValueError(f'beam_size {beam_size} must be in 1..vocab_size - 1')


def _encode(model: nn.Module, params, source_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
  memory_BxSxD = model.apply({'params': params}, source_BxS, method='encode')
  return memory_BxSxD, padding_mask(source_BxS, model.pad_id)


def _decode_step(
  model: nn.Module,
  params,
  cache: dict | None,
  token_N: jax.Array,
  position,
  memory_NxSxD: jax.Array,
  memory_mask_Nx1xS: jax.Array,
) -> tuple[jax.Array, dict]:
  """Logits (N, V) of the token after token_N, which sits at `position` in every row, and the
  cache with its keys and values added; cache None creates the cache (the first step)."""
  variables = {'params': params} if cache is None else {'params': params, 'cache': cache}
  start_N = jnp.full(token_N.shape[0], position, jnp.int32)
  logits_Nx1xV, variables = model.apply(
    variables,
    token_N[:, None],
    memory_NxSxD,
    memory_mask_Nx1xS,
    cache_start_B=start_N,
    method='decode',
    mutable=['cache'],
  )
  return logits_Nx1xV[:, 0], variables['cache']


def _log_probs(logits_NxV: jax.Array, pad_id, eos_id) -> jax.Array:
  """Log-softmax over the tokens decoding may choose: all but pad_id, which in the output means
  'no token' (unless pad_id is also EOS)."""
  allowed_V = (jnp.arange(logits_NxV.shape[1]) != pad_id) | (pad_id == eos_id)
  return jax.nn.log_softmax(jnp.where(allowed_V, logits_NxV, -jnp.inf), axis=-1)


def _take_beams(cache: dict, rows_N: jax.Array, scan_layers: bool) -> dict:
  """The self-attention cache of rows rows_N (the parent beam of each new beam)."""
  axis = 1 if scan_layers else 0  # scanned blocks stack every cache leaf along a leading layer axis

  def take(path, leaf: jax.Array) -> jax.Array:
    # The memory's keys and values ('kv') are the same for all beams of a row: nothing to reorder.
    return leaf if path[-1].key == 'kv' else jnp.take(leaf, rows_N, axis=axis)

  return jax.tree_util.tree_map_with_path(take, cache)


@functools.partial(jax.jit, static_argnames=('model', 'max_len', 'beam_size'))
def _beam_search(
  model: nn.Module,
  params,
  source_BxS: jax.Array,
  max_len: int,
  beam_size: int,
  bos_id,
  eos_id,
  pad_id,
  length_penalty,
) -> tuple[jax.Array, jax.Array]:
  """(ids (B, max_len), length-penalised score (B,)) of the best beam of each row."""
  _check(model, max_len, beam_size)
  batch, n_beams = source_BxS.shape[0], beam_size
  n_rows = batch * n_beams  # row b * n_beams + k of the decoder is beam k of source row b
  memory_BxSxD, memory_mask_Bx1xS = _encode(model, params, source_BxS)
  memory_NxSxD = jnp.repeat(memory_BxSxD, n_beams, axis=0)
  memory_mask_Nx1xS = jnp.repeat(memory_mask_Bx1xS, n_beams, axis=0)
  penalty = lambda length: ((5.0 + length) / 6.0) ** length_penalty

  def choose(step, logits_NxV, beams):
    """The best n_beams continuations per row: tokens (N,), their parents' decoder rows (N,), and
    the beams (ids, score, length, done) with column `step` written."""
    ids_BxbeamsxT, score_Bxbeams, length_Bxbeams, done_Bxbeams = beams
    vocab = logits_NxV.shape[1]
    log_probs_BxbeamsxV = _log_probs(logits_NxV, pad_id, eos_id).reshape(batch, n_beams, vocab)
    # A finished beam's only continuation is pad at no cost: it competes with its score frozen.
    frozen_V = jnp.where(jnp.arange(vocab) == pad_id, 0.0, -jnp.inf)
    candidate_BxbeamsxV = score_Bxbeams[..., None] + jnp.where(
      done_Bxbeams[..., None], frozen_V, log_probs_BxbeamsxV
    )
    new_length_Bxbeams = length_Bxbeams + ~done_Bxbeams
    ranked_BxbeamsxV = candidate_BxbeamsxV / penalty(new_length_Bxbeams)[..., None]
    _, best_Bxbeams = jax.lax.top_k(ranked_BxbeamsxV.reshape(batch, n_beams * vocab), n_beams)
    parent_Bxbeams, token_Bxbeams = best_Bxbeams // vocab, best_Bxbeams % vocab
    score_Bxbeams = jnp.take_along_axis(
      candidate_BxbeamsxV.reshape(batch, -1), best_Bxbeams, axis=1
    )
    length_Bxbeams = jnp.take_along_axis(new_length_Bxbeams, parent_Bxbeams, axis=1)
    done_Bxbeams = jnp.take_along_axis(done_Bxbeams, parent_Bxbeams, axis=1) | (
      token_Bxbeams == eos_id
    )
    ids_BxbeamsxT = jnp.take_along_axis(ids_BxbeamsxT, parent_Bxbeams[..., None], axis=1)
    ids_BxbeamsxT = ids_BxbeamsxT.at[:, :, step].set(jnp.where(done_Bxbeams, pad_id, token_Bxbeams))
    rows_N = (jnp.arange(batch)[:, None] * n_beams + parent_Bxbeams).reshape(n_rows)
    return (
      token_Bxbeams.reshape(n_rows),
      rows_N,
      (ids_BxbeamsxT, score_Bxbeams, length_Bxbeams, done_Bxbeams),
    )

  def unfinished(carry) -> jax.Array:
    step, _, _, (_, _, _, done_Bxbeams) = carry
    return (step < max_len) & ~jnp.all(done_Bxbeams)

  def step_fn(carry):
    step, cache, token_N, beams = carry
    logits_NxV, cache = _decode_step(
      model, params, cache, token_N, step, memory_NxSxD, memory_mask_Nx1xS
    )
    token_N, rows_N, beams = choose(step, logits_NxV, beams)
    return step + 1, _take_beams(cache, rows_N, model.config.scan_layers), token_N, beams

  logits_NxV, cache = _decode_step(
    model, params, None, jnp.full(n_rows, bos_id, jnp.int32), 0, memory_NxSxD, memory_mask_Nx1xS
  )
  # All beams start as the same BOS; only beam 0 may extend it, or the first step would select
  # n_beams copies of the best continuation.
  beams = (
    jnp.full((batch, n_beams, max_len), pad_id, jnp.int32),
    jnp.tile(jnp.where(jnp.arange(n_beams) == 0, 0.0, -jnp.inf), (batch, 1)),
    jnp.zeros((batch, n_beams), jnp.int32),
    jnp.zeros((batch, n_beams), bool),
  )
  token_N, rows_N, beams = choose(0, logits_NxV, beams)
  carry = (
    jnp.ones((), jnp.int32),
    _take_beams(cache, rows_N, model.config.scan_layers),
    token_N,
    beams,
  )
  ids_BxbeamsxT, score_Bxbeams, length_Bxbeams, _ = jax.lax.while_loop(unfinished, step_fn, carry)[
    3
  ]
  ranked_Bxbeams = score_Bxbeams / penalty(length_Bxbeams)
  best_B = jnp.argmax(ranked_Bxbeams, axis=1)
  rows_B = jnp.arange(batch)
  return ids_BxbeamsxT[rows_B, best_B], ranked_Bxbeams[rows_B, best_B]
