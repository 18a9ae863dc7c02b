import jax
import numpy as np

from gptjax.model import GPT, ModelConfig
from gptjax.sampling import generate

CONFIG = ModelConfig(vocab_size=31, n_ctx=24, n_layers=2, n_heads=2, d_model=16, d_ff=32)


def _params():
  return GPT(CONFIG).init(jax.random.key(0), np.zeros((1, CONFIG.n_ctx), np.int32))['params']


def test_greedy_decoding_picks_the_argmax_of_the_full_model_each_step():
  model, params = GPT(CONFIG), _params()
  prompt = [1, 5, 7]
  new = generate(model, params, prompt, 6, jax.random.key(0), temperature=0.0)
  sequence = list(prompt)
  for _ in range(6):
    logits = model.apply({'params': params}, np.array([sequence]))[0, -1]
    sequence.append(int(np.argmax(logits)))
  assert new == sequence[len(prompt):]


def test_sampling_is_reproducible_and_stays_within_the_context():
  model, params = GPT(CONFIG), _params()
  a = generate(model, params, [1, 2], 50, jax.random.key(3), temperature=1.0, top_k=5)
  assert a == generate(model, params, [1, 2], 50, jax.random.key(3), temperature=1.0, top_k=5)
  assert len(a) == CONFIG.n_ctx - 2
  assert a != generate(model, params, [1, 2], 50, jax.random.key(4), temperature=1.0, top_k=5)


def test_top_1_sampling_is_greedy_and_eos_ends_the_sample():
  model, params = GPT(CONFIG), _params()
  greedy = generate(model, params, [1, 2], 8, jax.random.key(0), temperature=0.0)
  assert generate(model, params, [1, 2], 8, jax.random.key(9), temperature=1.0, top_k=1) == greedy
  assert generate(model, params, [1, 2], 8, jax.random.key(0), temperature=0.0,
                  eos_id=greedy[3]) == greedy[:greedy.index(greedy[3])]
