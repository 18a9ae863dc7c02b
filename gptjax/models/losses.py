"""The cross-entropies of every architecture: the language-modelling loss fused with the output
projection (GPT), the plain per-token one (BERT, task heads) and the label-smoothed one (the
encoder-decoder).

The logits of a batch are tokens x vocabulary floats: at 2,048 tokens and 4,096 entries, 32 MiB,
written by one matmul, read by the softmax, rewritten as their gradient and read by two more
matmuls. fused_cross_entropy never holds them all: it walks over chunks of tokens, and for each
computes the logits, the loss and, when differentiated, the gradients with respect to the hidden
states and the output embedding right away (the loss is a sum over tokens, so each chunk's
gradient is final once its logits exist). A chunk's logits stay in cache; the FLOPs are the same
three matmuls as the unfused loss.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from gptjax.models.ops import matmul, transpose_copy

CHUNK_LOGITS = 2**20  # float32 logits per chunk: 4 MiB, about what a core's caches hold
MIN_CHUNK_TOKENS = 256  # thinner chunks make the products slower than the cache misses they save


def default_chunk_tokens(vocab_size: int) -> int:
  """Tokens per chunk: CHUNK_LOGITS logits, but no fewer than MIN_CHUNK_TOKENS tokens (the README's
  Speed section has the timings that chose both)."""
  return max(MIN_CHUNK_TOKENS, CHUNK_LOGITS // vocab_size)


def fused_cross_entropy(
  hidden_NxD: jax.Array,
  embedding_VxD: jax.Array,
  targets_N: jax.Array,
  chunk_tokens: int | None = None,
) -> jax.Array:
  """Mean over N tokens of -log softmax(hidden @ embedding.T)[target], computed in float32 from
  products with operands in hidden_NxD's dtype (see layers.matmul).

  Equal to optax.softmax_cross_entropy_with_integer_labels on the full logits, with gradients
  for hidden_NxD and embedding_VxD (not for the integer targets).
  """
  n_tokens = hidden_NxD.shape[0]
  chunk = min(chunk_tokens or default_chunk_tokens(embedding_VxD.shape[0]), n_tokens)
  padding = -n_tokens % chunk
  # Padded rows have target -1: they match no vocabulary entry and are masked out of the loss.
  hidden_chunksxtokensxD = jnp.pad(hidden_NxD, ((0, padding), (0, 0))).reshape(
    -1, chunk, hidden_NxD.shape[1]
  )
  targets_chunksxtokens = jnp.pad(targets_N, (0, padding), constant_values=-1).reshape(-1, chunk)
  return _chunked_cross_entropy(
    hidden_chunksxtokensxD, embedding_VxD, targets_chunksxtokens, n_tokens
  )


def _chunk_logits(hidden_tokensxD: jax.Array, embedding_VxD: jax.Array) -> jax.Array:
  return matmul('td,vd->tv', hidden_tokensxD, embedding_VxD, hidden_tokensxD.dtype)  # float32


def _chunk_loss_sum(
  logits_tokensxV: jax.Array, targets_tokens: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(sum of the chunk's valid token losses, log-sum-exp of each row)."""
  logsumexp_tokens = jax.nn.logsumexp(logits_tokensxV, axis=-1)
  target_logit_tokens = jnp.take_along_axis(
    logits_tokensxV, jnp.maximum(targets_tokens, 0)[:, None], axis=-1
  )[:, 0]
  return jnp.sum(
    jnp.where(targets_tokens >= 0, logsumexp_tokens - target_logit_tokens, 0.0)
  ), logsumexp_tokens


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked_cross_entropy(
  hidden_chunksxtokensxD, embedding_VxD, targets_chunksxtokens, n_tokens: int
) -> jax.Array:
  def add_chunk(total, chunk):
    hidden_tokensxD, targets_tokens = chunk
    return total + _chunk_loss_sum(_chunk_logits(hidden_tokensxD, embedding_VxD), targets_tokens)[
      0
    ], None

  total, _ = jax.lax.scan(
    add_chunk, jnp.zeros((), jnp.float32), (hidden_chunksxtokensxD, targets_chunksxtokens)
  )
  return total / n_tokens


def _loss_and_gradients(
  hidden_chunksxtokensxD, embedding_VxD, targets_chunksxtokens, n_tokens: int
):
  def add_chunk(carry, chunk):
    total, grad_embedding_DxV = carry
    hidden_tokensxD, targets_tokens = chunk
    logits_tokensxV = _chunk_logits(hidden_tokensxD, embedding_VxD)
    loss_sum, logsumexp_tokens = _chunk_loss_sum(logits_tokensxV, targets_tokens)
    # d(mean loss)/d logits = (softmax - one_hot(target)) / n_tokens on valid rows, 0 on padding.
    probs_tokensxV = jnp.exp(logits_tokensxV - logsumexp_tokens[:, None])
    one_hot_tokensxV = jnp.arange(logits_tokensxV.shape[1]) == targets_tokens[:, None]
    valid_tokensx1 = (targets_tokens >= 0)[:, None]
    grad_logits_tokensxV = (
      jnp.where(valid_tokensx1, probs_tokensxV - one_hot_tokensxV, 0.0) / n_tokens
    )
    dtype = hidden_tokensxD.dtype
    grad_hidden_tokensxD = matmul('tv,vd->td', grad_logits_tokensxV, embedding_VxD, dtype).astype(
      dtype
    )
    # Summed transposed, (D, V): each chunk's product then moves only the small hidden_tokensxD (see
    # layers.matmul), and the sum is transposed once.
    grad_embedding_DxV += matmul('td,tv->dv', hidden_tokensxD, grad_logits_tokensxV, dtype)
    return (total + loss_sum, grad_embedding_DxV), grad_hidden_tokensxD

  init = (jnp.zeros((), jnp.float32), jnp.zeros(embedding_VxD.shape[::-1], jnp.float32))
  (total, grad_embedding_DxV), grad_hidden_chunksxtokensxD = jax.lax.scan(
    add_chunk, init, (hidden_chunksxtokensxD, targets_chunksxtokens)
  )
  return total / n_tokens, (
    grad_hidden_chunksxtokensxD,
    transpose_copy(grad_embedding_DxV, [1, 0]).astype(embedding_VxD.dtype),
  )


def _backward(n_tokens: int, gradients, grad_loss):
  grad_hidden_chunksxtokensxD, grad_embedding_VxD = gradients
  return (
    grad_loss.astype(grad_hidden_chunksxtokensxD.dtype) * grad_hidden_chunksxtokensxD,
    grad_loss.astype(grad_embedding_VxD.dtype) * grad_embedding_VxD,
    None,
  )


_chunked_cross_entropy.defvjp(_loss_and_gradients, _backward)


def token_cross_entropy(logits_NxV: jax.Array, labels_N: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] per position, any leading shape: optax's integer-label
  cross-entropy (logsumexp minus the label's logit), what BERT and the task heads use."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_NxV, labels_N)


def label_smoothed_cross_entropy(
  logits_NxV: jax.Array, labels_N: jax.Array, smoothing: float
) -> tuple[jax.Array, jax.Array]:
  """(smoothed, plain) cross-entropy per position, any leading shape: the smoothed one is against
  1 - smoothing on the label plus smoothing spread uniformly over the vocabulary (Szegedy et al.
  2016, as "Attention Is All You Need" trains), the plain one -log p(label)."""
  log_probs_NxV = jax.nn.log_softmax(logits_NxV, axis=-1)
  nll_N = -jnp.take_along_axis(log_probs_NxV, labels_N[..., None], axis=-1)[..., 0]
  # Cross-entropy with the uniform distribution: the mean of -log p over the vocabulary.
  uniform_nll_N = -jnp.mean(log_probs_NxV, axis=-1)
  return (1 - smoothing) * nll_N + smoothing * uniform_nll_N, nll_N


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean of values where mask is true; 0, not NaN, where it is true nowhere."""
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
