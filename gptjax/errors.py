"""The one exception type for mistakes a user can fix (config, data, paths, checkpoints), and how
the command-line tools report them: a single `error: ...` line and a non-zero exit status, without
a traceback.
"""
import sys
from typing import NoReturn

from absl import flags


class UserError(Exception):
  pass


def fail(message: str, status: int = 1) -> NoReturn:
  print('error: ' + ' '.join(message.split()), file=sys.stderr)  # always one line
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (for app.run's flags_parser) with a bad or missing flag as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e), status=2)
