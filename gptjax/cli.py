"""What every command line shares: absl flags (an ml_collections --config that takes a path or a
shipped config's name), --debug, quiet logging, and how a command ends: a UserError as one
`error: ...` line and status 1, a bad flag or argument as one line and status 2, a preemption with
its message and status 143. Library modules raise UserError and never print or exit.

A command is a module with flags at the top and `if __name__ == '__main__': cli.run(main)`.
"""

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from gptjax import configs
from gptjax.errors import Preempted, UserError

DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback behind an error line.')


def define_config_flag(
  default: str | None = None,
  help_text: str = 'A config file, or the name of a shipped config '
  '(gptjax/configs/: default, tiny, ...).',
) -> flags.FlagHolder:
  """The --config flag; its fields can be overridden with --config.a.b=value."""
  return config_flags.DEFINE_config_file(
    'config', None if default is None else configs.resolve(default), help_text
  )


def run(main: Callable[[list[str]], None], config_flag: flags.FlagHolder | None = None) -> None:
  """app.run(main) the gptjax way: flag errors as one line, orbax's and jax's INFO logging off,
  and main's UserError and Preempted reported as the module docstring says."""

  def wrapped(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax and jax log every step of a save at INFO
    with reported(debug=DEBUG.value):
      main(argv)

  app.run(wrapped, flags_parser=lambda argv: parse_flags(argv, config_flag))


def positional(argv: list[str], *names: str) -> list[str]:
  """The command's positional arguments, exactly len(names) of them (argv[0] is the program)."""
  given = argv[1:]
  if len(given) != len(names):
    usage = ' '.join(n.upper() for n in names) or 'no positional arguments'
    fail(f'expected {usage}, got {" ".join(given) or "none"} (see --help)', status=2)
  return given


def fail(message: str, status: int = 1) -> NoReturn:
  print('error: ' + ' '.join(message.split()), file=sys.stderr)  # always one line
  sys.exit(status)


def parse_flags(argv: list[str], config_flag: flags.FlagHolder | None = None) -> list[str]:
  """absl's flag parsing (for app.run's flags_parser) with a bad or missing flag as one line; with
  an ml_collections --config flag, a missing config file, an override of a field that does not
  exist or a config file whose code fails is one line too."""
  try:
    if config_flag is None:
      return flags.FLAGS(argv)
    args = flags.FLAGS(_resolve_config_names(argv, config_flag.name))
    # A config file that failed to load raises on first use: make it fail here.
    config_flag.value.keys()
    return args
  except flags.Error as e:
    fail(str(e), status=2)
  except (
    AttributeError,
    KeyError,
  ) as e:  # config_flags: an override names a field that is not there
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError(...))
      e = e.args[0]
    fail(f'unknown config field in a --config override: {e.args[0] if e.args else e}', status=2)
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed
    fail(f'{type(e).__name__}: {e.__cause__ or e}', status=2)


def _resolve_config_names(argv: list[str], name: str) -> list[str]:
  """argv with a shipped config's name after --config (--config tiny) replaced by its path."""

  def resolve(spec: str) -> str:
    path = configs.resolve(spec)
    if not os.path.exists(path.partition(':')[0]):
      looks_like_a_path = os.sep in spec or spec.partition(':')[0].endswith('.py')
      fail(
        f'--{name}={spec}: No such file or directory'
        + (
          ''
          if looks_like_a_path
          else f', and no shipped config of that name (one of {", ".join(configs.names())})'
        ),
        status=2,
      )
    return path

  resolved = list(argv)
  for i, arg in enumerate(resolved):
    if arg == f'--{name}' and i + 1 < len(resolved):
      resolved[i + 1] = resolve(resolved[i + 1])
    elif arg.startswith(f'--{name}='):
      resolved[i] = f'--{name}=' + resolve(arg.split('=', 1)[1])
  return resolved


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
