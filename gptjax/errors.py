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
