import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.decoding import sampling
from gptjax.decoding.sampling import generate, generate_batch
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT

CONFIG = ModelConfig(vocab_size=31, n_ctx=24, n_layers=2, n_heads=2, d_model=16, d_ff=32)


def _params(config: ModelConfig = CONFIG):
  return GPT(config).init(jax.random.key(0), np.zeros((1, config.n_ctx), np.int32))['params']


@pytest.mark.parametrize(
  'variant',
  [{}, {'norm': 'post', 'pos_emb': 'sinusoidal', 'tie_embeddings': False}, {'scan_layers': True}],
)
def test_cached_greedy_decoding_matches_the_full_model_step_by_step(variant):
  """The cache is exact: prefill + one decode step per token gives the logits (and so the greedy
  tokens) of re-running the whole model on the growing sequence, for rows of different lengths."""
  config = dataclasses.replace(CONFIG, **variant)
  model, params = GPT(config), _params(config)
  prompts = [[1, 5, 7], [3, 9, 2, 8, 8, 4, 1]]
  tokens_BxS = np.zeros((2, config.n_ctx), np.int32)
  for row, prompt in zip(tokens_BxS, prompts):
    row[: len(prompt)] = prompt
  cache = jax.jit(sampling.prefill, static_argnums=0)(model, params, tokens_BxS, np.array([3, 7]))
  step = jax.jit(sampling.decode_step, static_argnums=0)
  # The full model on each growing sequence; zeros after it cannot change its logits (causality,
  # tested in test_gpt.py), and one fixed length compiles once.
  full_logits_at = jax.jit(lambda ids_S, t: model.apply({'params': params}, ids_S[None])[0, t])
  sequences = [list(p) for p in prompts]
  for _ in range(12):
    last_B = np.array([len(s) - 1 for s in sequences], np.int32)
    logits_BxV, cache = step(model, params, cache, np.array([s[-1] for s in sequences]), last_B)
    for b, sequence in enumerate(sequences):
      ids_S = np.zeros(config.n_ctx, np.int32)
      ids_S[: len(sequence)] = sequence
      np.testing.assert_allclose(
        logits_BxV[b], full_logits_at(ids_S, len(sequence) - 1), atol=1e-5, rtol=1e-5
      )
      sequence.append(int(np.argmax(logits_BxV[b])))
  new = generate_batch(model, params, prompts, 12, jax.random.key(0), temperature=0.0)
  assert new == [s[len(p) :] for s, p in zip(sequences, prompts)]


@pytest.mark.parametrize('chunk', [5, 8, CONFIG.n_ctx])
def test_prefill_in_chunks_gives_the_logits_of_the_full_model(chunk):
  """Chunks of 5 end with one that overlaps its predecessor (24 is no multiple of 5)."""
  model, params = GPT(CONFIG), _params()
  tokens_BxS = jax.random.randint(jax.random.key(1), (2, CONFIG.n_ctx), 0, CONFIG.vocab_size)
  lengths_B = np.array([22, 9], np.int32)
  cache = sampling.prefill(model, params, tokens_BxS, lengths_B, chunk)
  rows_B = np.arange(2)
  logits_BxV, _ = sampling.decode_step(
    model, params, cache, tokens_BxS[rows_B, lengths_B - 1], lengths_B - 1
  )
  full_BxSxV = model.apply({'params': params}, tokens_BxS)
  np.testing.assert_allclose(logits_BxV, full_BxSxV[rows_B, lengths_B - 1], atol=1e-5, rtol=1e-5)


def test_a_batch_of_prompts_continues_each_as_it_would_alone():
  model, params = GPT(CONFIG), _params()
  prompts = [[1], [4, 4, 2, 9, 11], [7, 3, 3]]
  batch = generate_batch(model, params, prompts, 9, jax.random.key(0), temperature=0.0)
  assert batch == [
    generate(model, params, p, 9, jax.random.key(0), temperature=0.0) for p in prompts
  ]


def test_one_compilation_serves_every_prompt_length_token_count_and_temperature():
  model, params = GPT(CONFIG), _params()
  generate_batch(model, params, [[1, 2]], 3, jax.random.key(0), temperature=0.5, top_k=5)
  compiled = sampling._decode._cache_size()
  for prompt, n_new, temperature in (([1] * 9, 7, 0.0), ([5], 20, 1.3), ([2] * 20, 2, 0.9)):
    generate_batch(
      model, params, [prompt], n_new, jax.random.key(1), temperature=temperature, top_k=5
    )
  assert sampling._decode._cache_size() == compiled


def test_sampling_is_reproducible_and_stays_within_the_context():
  model, params = GPT(CONFIG), _params()
  a = generate(model, params, [1, 2], 50, jax.random.key(3), temperature=1.0, top_k=5)
  assert a == generate(model, params, [1, 2], 50, jax.random.key(3), temperature=1.0, top_k=5)
  assert len(a) == CONFIG.n_ctx - 2
  assert a != generate(model, params, [1, 2], 50, jax.random.key(4), temperature=1.0, top_k=5)
  rows = generate_batch(model, params, [[1, 2], [6] * 20], 50, jax.random.key(3), temperature=1.0)
  assert [len(r) for r in rows] == [CONFIG.n_ctx - 2, CONFIG.n_ctx - 20]


def test_top_1_sampling_is_greedy_and_eos_ends_the_sample():
  model, params = GPT(CONFIG), _params()
  greedy = generate(model, params, [1, 2], 8, jax.random.key(0), temperature=0.0)
  assert generate(model, params, [1, 2], 8, jax.random.key(9), temperature=1.0, top_k=1) == greedy
  assert (
    generate(model, params, [1, 2], 8, jax.random.key(9), temperature=1.0, top_p=1e-3) == greedy
  )
  assert (
    generate(model, params, [1, 2], 8, jax.random.key(0), temperature=0.0, eos_id=greedy[3])
    == greedy[: greedy.index(greedy[3])]
  )


def test_top_k_and_top_p_keep_the_most_likely_tokens():
  logits_1xV = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  kept = lambda **kw: np.flatnonzero(
    np.isfinite(sampling.filter_logits(logits_1xV, **kw)[0])
  ).tolist()
  assert kept() == [0, 1, 2, 3]
  assert kept(top_k=2) == [1, 3]
  assert kept(top_p=0.5) == [1]
  assert kept(top_p=0.8) == [1, 3]  # 0.5 + 0.3 reaches 0.8
  assert kept(top_p=0.81) == [1, 2, 3]
  assert kept(top_k=3, top_p=0.84) == [1, 3]  # within the top 3: 0.5 / 0.95 + 0.3 / 0.95 = 0.842
  # Sampled frequencies follow the renormalised probabilities.
  tokens = sampling.next_token(jnp.tile(logits_1xV, (4000, 1)), jax.random.key(0), 1.0, top_k=3)
  np.testing.assert_allclose(
    np.bincount(tokens, minlength=4) / 4000, [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95], atol=0.03
  )


def test_bad_prompts_are_rejected():
  model, params = GPT(CONFIG), _params()
  for prompts in ([[]], [[1] * CONFIG.n_ctx]):
    with pytest.raises(ValueError, match='prompt'):
      generate_batch(model, params, prompts, 3, jax.random.key(0))


def test_decode_benchmark_reports_both_speeds():
  result = sampling.benchmark_decode(GPT(CONFIG), _params(), new_tokens=8, prompt_len=4)
  assert result['same_tokens'] and result['new_tokens'] == 8
  assert result['cached_tokens_per_s'] > 0 and result['uncached_tokens_per_s'] > 0
