"""How fast a config trains (or decodes) on this machine.

  python -m gptjax.bench --config tiny --shape 4,4,128,128,16,4096 --json
  python -m gptjax.bench --config default --mode decode --new_tokens 256 --decode_batch 8

--config is a config file or a shipped config's name (default: default), and any field can be
overridden as in gptjax.main (--config.model.dtype=bfloat16). --shape layers,heads,d_model,seq,
batch,vocab overrides the model (d_ff = 4 d_model, n_ctx = seq) and the batch for quick
comparisons. Train mode reports compile time, step time, tokens/s, FLOPs per token and MFU; decode
mode greedy decoding's speed with and without the key/value cache (gptjax/training/benchmark.py).
"""

import json

from absl import flags

from gptjax import cli
from gptjax.training import benchmark

_CONFIG = cli.define_config_flag(default='default')
_SHAPE = flags.DEFINE_string(
  'shape', '', "layers,heads,d_model,seq,batch,vocab: overrides the config's model and batch shape."
)
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'decode'], 'What to time.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed train steps.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.', lower_bound=0)
_NEW_TOKENS = flags.DEFINE_integer(
  'new_tokens', 512, 'Decode mode: tokens to decode.', lower_bound=1
)
_PROMPT_LEN = flags.DEFINE_integer(
  'prompt_len', 128, 'Decode mode: prompt tokens before them.', lower_bound=1
)
_DECODE_BATCH = flags.DEFINE_integer(
  'decode_batch', 1, 'Decode mode: sequences decoded at once.', lower_bound=1
)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')


def main(argv: list[str]) -> None:
  cli.positional(argv)
  config = _CONFIG.value
  if _SHAPE.value:
    benchmark.apply_shape(config, _SHAPE.value)
  if _MODE.value == 'train':
    result = benchmark.bench_train(config, _STEPS.value, _WARMUP.value)
  else:
    result = benchmark.bench_decode(
      config, _NEW_TOKENS.value, _PROMPT_LEN.value, _DECODE_BATCH.value
    )
  print(json.dumps(result) if _JSON.value else benchmark.format_report(result))


if __name__ == '__main__':
  cli.run(main, _CONFIG)
