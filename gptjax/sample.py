"""Sample from a run: python -m gptjax.sample --workdir runs/default --prompt "def fib("

Loads the workdir's config.json, tokenizer and latest checkpoint (as python -m gptjax.main or
python -m gptjax.convert leave them) and continues the prompt, after a BOS token as in training,
with the key/value-cache sampler. --num_samples continues it that many times, in one batch.
"""

import math
import os

import jax
from absl import flags

from gptjax import cli
from gptjax.decoding import sampling
from gptjax.errors import UserError
from gptjax.training.state import load_run

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run: config.json, tokenizer, checkpoints/.')
_PROMPT = flags.DEFINE_string('prompt', None, 'Text to continue.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'File whose text to continue (UTF-8).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Continuations of the prompt.', lower_bound=1)
_MAX_NEW_TOKENS = flags.DEFINE_integer(
  'max_new_tokens',
  200,
  'Tokens to add at most (fewer at EOS or when the context is full).',
  lower_bound=0,
)
_TEMPERATURE = flags.DEFINE_float(
  'temperature', 0.8, 'Softmax temperature; 0 = greedy.', lower_bound=0
)
_TOP_K = flags.DEFINE_integer(
  'top_k', 40, 'Sample among the k most likely tokens; 0 = all.', lower_bound=0
)
_TOP_P = flags.DEFINE_float(
  'top_p',
  1.0,
  'Then among the fewest most likely tokens whose '
  'probability adds up to top_p (nucleus sampling); 1 = all.',
)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed: the same seed gives the same samples.')
flags.mark_flag_as_required('workdir')
flags.register_validator('top_p', lambda p: 0 < p <= 1, '--top_p must be in (0, 1]')
# NaN passes lower_bound (every comparison with NaN is false).
flags.register_validator('temperature', math.isfinite, '--temperature must be a finite number')


def _read_prompt() -> str:
  if (_PROMPT.value is None) == (_PROMPT_FILE.value is None):
    raise UserError('give the prompt with one of --prompt or --prompt_file')
  if _PROMPT.value is not None:
    return _PROMPT.value
  try:
    with open(os.path.expanduser(_PROMPT_FILE.value), encoding='utf-8') as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f'cannot read --prompt_file: {e}') from None


def main(argv: list[str]) -> None:
  cli.positional(argv)
  prompt = _read_prompt()
  tokenizer, model, params = load_run(_WORKDIR.value)
  texts = sampling.sample_texts(
    model,
    params,
    tokenizer,
    prompt,
    _NUM_SAMPLES.value,
    _MAX_NEW_TOKENS.value,
    jax.random.PRNGKey(_SEED.value),
    _TEMPERATURE.value,
    _TOP_K.value,
    _TOP_P.value,
  )
  for i, text in enumerate(texts):
    if len(texts) > 1:
      print(f'--- sample {i + 1} ---')
    print(text)


if __name__ == '__main__':
  cli.run(main)
