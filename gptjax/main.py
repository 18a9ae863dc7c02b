"""Train a GPT: python -m gptjax.main --config configs/default.py --workdir runs/default

Any config field can be overridden: --config.model.n_layers=2 --config.train.steps=100.
Running the same command again resumes from the workdir's latest checkpoint. After SIGTERM (a
preemption) the run saves a checkpoint and exits with status 143.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gptjax import sharding, train
from gptjax.errors import fail, reported

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the tokenizer, token caches, '
                               'checkpoints and metrics.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback of errors instead of one line.')
flags.mark_flags_as_required(['config', 'workdir'])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake (unknown field, bad value, missing file) as one line."""
  try:
    args = flags.FLAGS(argv)
    _CONFIG.value.keys()  # a config file that failed to load raises on first use; make it fail here
    return args
  except flags.Error as e:
    fail(str(e), status=2)
  except (AttributeError, KeyError) as e:  # config_flags: an override names a field that is not there
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError(...))
      e = e.args[0]
    fail(f'unknown config field in a --config override: {e.args[0] if e.args else e}', status=2)
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed
    fail(f'{type(e).__name__}: {e.__cause__ or e}', status=2)


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
  app.run(main, flags_parser=_parse_flags)
