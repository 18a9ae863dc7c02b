"""Simple sampling: re-run the whole model on a fixed-size buffer for every new token.

Quadratic in length, but one compiled function for any prompt; good enough for a look at what a
model learned.
"""
import functools

import jax
import jax.numpy as jnp

from gptjax.model import GPT


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'top_k'))
def _sample_into(model: GPT, params, buffer_L: jax.Array, prompt_len: jax.Array, rng: jax.Array,
                 max_new_tokens: int, temperature: float, top_k: int) -> jax.Array:
  def next_token(t, buffer_L):
    logits_V = model.apply({'params': params}, buffer_L[None])[0, t - 1]
    if top_k:
      kth_largest = jax.lax.top_k(logits_V, top_k)[0][-1]
      logits_V = jnp.where(logits_V < kth_largest, -jnp.inf, logits_V)
    sampled = jax.random.categorical(jax.random.fold_in(rng, t), logits_V / jnp.maximum(temperature, 1e-6))
    token = jnp.where(temperature > 0, sampled, jnp.argmax(logits_V))
    return buffer_L.at[t].set(token)
  return jax.lax.fori_loop(prompt_len, prompt_len + max_new_tokens, next_token, buffer_L)


def generate(model: GPT, params, prompt_ids: list[int], max_new_tokens: int, rng: jax.Array,
             temperature: float = 1.0, top_k: int = 0, eos_id: int | None = None) -> list[int]:
  """Continues `prompt_ids` by up to max_new_tokens (fewer if the context fills up or EOS comes)."""
  n_ctx = model.config.n_ctx
  prompt_ids = prompt_ids[-(n_ctx - 1):]
  max_new_tokens = min(max_new_tokens, n_ctx - len(prompt_ids))
  buffer_L = jnp.zeros(n_ctx, jnp.int32).at[:len(prompt_ids)].set(jnp.array(prompt_ids, jnp.int32))
  buffer_L = _sample_into(model, params, buffer_L, len(prompt_ids), rng, max_new_tokens,
                          temperature, min(top_k, model.config.vocab_size))
  new_ids = buffer_L[len(prompt_ids):len(prompt_ids) + max_new_tokens].tolist()
  if eos_id is not None and eos_id in new_ids:
    new_ids = new_ids[:new_ids.index(eos_id)]
  return new_ids
