"""Train a GPT: python -m gptjax.main --config configs/default.py --workdir runs/default

Any config field can be overridden: --config.model.n_layers=2 --config.train.steps=100.
Running the same command again resumes from the workdir's latest checkpoint. After SIGTERM (a
preemption) the run saves a checkpoint and exits with status 143.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gptjax import sharding, train
from gptjax.errors import parse_config_flags, reported

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the tokenizer, token caches, '
                               'checkpoints and metrics.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback of errors instead of one line.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # orbax and jax log every step of a save at INFO
  config = _CONFIG.value
  with reported(debug=_DEBUG.value):
    if config.distributed.initialize:
      sharding.initialize_distributed(config.distributed)
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: parse_config_flags(argv, _CONFIG))
