"""Train a GPT: python -m gptjax.main --config configs/default.py --workdir runs/default

Any config field can be overridden: --config.model.n_layers=2 --config.train.steps=100.
Running the same command again resumes from the workdir's latest checkpoint.
"""
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gptjax import train
from gptjax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the tokenizer, token caches, '
                               'checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # orbax and jax log every step of a save at INFO
  config = _CONFIG.value
  try:
    if config.distributed.initialize:
      jax.distributed.initialize(
          coordinator_address=config.distributed.coordinator_address or None,
          num_processes=config.distributed.num_processes or None,
          process_id=None if config.distributed.process_id < 0 else config.distributed.process_id)
    train.train_and_evaluate(config, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
