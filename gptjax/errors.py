"""The one exception type for mistakes a user can fix (config, data, paths, checkpoints), and how
the command-line tools report them: a single `error: ...` line and a non-zero exit status, without
a traceback.
"""
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

from absl import flags


class UserError(Exception):
  pass


class Preempted(Exception):
  """The run saved a checkpoint after SIGTERM and stopped; the same command continues it."""


def fail(message: str, status: int = 1) -> NoReturn:
  print('error: ' + ' '.join(message.split()), file=sys.stderr)  # always one line
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (for app.run's flags_parser) with a bad or missing flag as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e), status=2)


def parse_config_flags(argv: list[str], config_flag: flags.FlagHolder) -> list[str]:
  """parse_flags for a tool with an ml_collections --config flag: a missing config file, an
  override of a field that does not exist or a config file whose code fails is one line too."""
  try:
    args = flags.FLAGS(argv)
    config_flag.value.keys()  # a config file that failed to load raises on first use; make it fail here
    return args
  except flags.Error as e:
    fail(str(e), status=2)
  except (AttributeError, KeyError) as e:  # config_flags: an override names a field that is not there
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError(...))
      e = e.args[0]
    fail(f'unknown config field in a --config override: {e.args[0] if e.args else e}', status=2)
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed
    fail(f'{type(e).__name__}: {e.__cause__ or e}', status=2)


@contextlib.contextmanager
def reported(debug: bool = False) -> Iterator[None]:
  """Ends a command-line tool the way all of gptjax's do: a UserError as one `error:` line and
  status 1 (its traceback instead with `debug`), a preemption with its message and status 143."""
  try:
    yield
  except UserError as e:
    if debug:
      raise
    fail(str(e))
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)  # the conventional status of a process ended by SIGTERM
