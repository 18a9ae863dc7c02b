"""Decode speed with and without the key/value cache, as one JSON object on stdout.

  python -m experiments.bench_decode > experiments/results/decode_cpu.json

The model is configs/default.py's (4 layers, d_model 192, 4,096 tokens) with random weights, which
decode exactly as fast as trained ones, and n_ctx raised from 128 to 640 so that a 128-token
prompt and 512 new tokens fit. See gptjax.sampling.benchmark_decode for what is timed; --batch_size
and the lengths are flags.
"""
import json
import os

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from configs import default
from gptjax import configuration, sampling
from gptjax.errors import parse_flags
from gptjax.model import GPT

_NEW_TOKENS = flags.DEFINE_integer('new_tokens', 512, 'Tokens to decode.', lower_bound=1)
_PROMPT_LEN = flags.DEFINE_integer('prompt_len', 128, 'Prompt tokens before them.', lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 1, 'Sequences decoded at once.', lower_bound=1)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = default.get_config()
  config.model.n_ctx = _PROMPT_LEN.value + _NEW_TOKENS.value
  model = GPT(configuration.model_config(config, config.tokenizer.vocab_size))
  params = jax.jit(model.init)(jax.random.key(config.seed),
                               jnp.zeros((1, config.model.n_ctx), jnp.int32))['params']
  result = sampling.benchmark_decode(model, params, _NEW_TOKENS.value, _BATCH_SIZE.value,
                                     _PROMPT_LEN.value, config.seed)
  # Other processes slow a CPU run down: the load says how busy the machine was (this run adds ~1).
  result.update(cpu_count=os.cpu_count(), load_average_1m=os.getloadavg()[0])
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
