"""What every command line shares: absl flags (an ml_collections --config that takes a path or a
shipped config's name), --debug, quiet logging, and how a command ends: a UserError as one
`error: ...` line and status 1, a bad flag or argument as one line and status 2, a preemption with
its message and status 143. Library modules raise UserError and never print or exit.

A command is a module with flags at the top and `if __name__ == '__main__': cli.run(main)`.
"""

import contextlib
import errno
import importlib.util
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from gptjax import configs
from gptjax.errors import Preempted, UserError, where_raised

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
    if not DEBUG.value:
      # orbax logs what it meets reading a damaged checkpoint or failing a write (at ERROR, with
      # tracebacks); gptjax reports those itself, in one warning: or error: line.
      logging.get_absl_logger().addFilter(_not_orbax)
    with reported(debug=DEBUG.value):
      main(argv)

  app.run(wrapped, flags_parser=lambda argv: parse_flags(argv, config_flag))


def _not_orbax(record) -> bool:
  return f'{os.sep}orbax{os.sep}' not in record.pathname


def positional(argv: list[str], *names: str) -> list[str]:
  """The command's positional arguments, exactly len(names) of them (argv[0] is the program)."""
  given = argv[1:]
  if len(given) != len(names):
    usage = ' '.join(n.upper() for n in names) or 'no positional arguments'
    fail(f'expected {usage}, got {" ".join(given) or "none"} (see --help)', status=2)
  return given


def fail(message: str, status: int = 1) -> NoReturn:
  _close_progress_bars()
  print('error: ' + ' '.join(message.split()), file=sys.stderr)  # always one line
  sys.exit(status)


def _close_progress_bars() -> None:
  """Ends every open tqdm bar with its newline, so that an error line is not glued to the end of
  a bar, nor drawn over by it when the bar is closed at exit."""
  tqdm = sys.modules.get('tqdm')
  if tqdm is None:
    return
  for bar in list(getattr(tqdm.tqdm, '_instances', ())):
    with contextlib.suppress(Exception):
      bar.close()
  sys.stderr.flush()


def filesystem_error(e: OSError) -> str:
  """One line for an OSError of a path (a workdir that is a file, a read-only directory, a full
  disk): the path, what the system said and what to do."""
  where = e.filename if e.filename2 is None else f'{e.filename} -> {e.filename2}'
  code = e.errno
  if code in (errno.ENOSPC, errno.EDQUOT):
    advice = 'free space and run the same command again'
  elif code == errno.EFBIG:
    advice = 'a file size limit (ulimit -f) stopped the write; raise it and run the same command'
  elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
    advice = 'make it (and its parent directory) writable, or use another path'
  elif code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
    advice = 'a file stands where a directory is needed, or the other way round; use another path'
  elif code == errno.ENOENT:
    advice = 'check the path'
  else:
    advice = 'fix the cause and run the same command again'
  return f'{where}: {e.strerror or e}; {advice}'


def parse_flags(argv: list[str], config_flag: flags.FlagHolder | None = None) -> list[str]:
  """absl's flag parsing (for app.run's flags_parser) with a bad or missing flag as one line; with
  an ml_collections --config flag, a missing config file, an override of a field that does not
  exist or a config file whose code fails (or that has no get_config()) is one line too."""
  resolved = argv if config_flag is None else _resolve_config_names(argv, config_flag.name)
  try:
    if config_flag is None:
      return flags.FLAGS(argv)
    args = flags.FLAGS(resolved)
    # A config file that failed to load raises on first use: make it fail here.
    config_flag.value.keys()
    return args
  except Exception as e:  # pylint: disable=broad-except  # each kind is reported in one line below
    if config_flag is not None:
      problem = _config_file_problem(_flag_value(resolved, config_flag.name))
      if problem:
        fail(problem, status=2)
    if isinstance(e, flags.Error):
      fail(str(e), status=2)
    if isinstance(e, (AttributeError, KeyError)):  # an override names a field that is not there
      while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError())
        e = e.args[0]
      fail(f'unknown config field in a --config override: {e.args[0] if e.args else e}', status=2)
    fail(f'{type(e).__name__}: {e.__cause__ or e}', status=2)


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last value given to --name in argv (as --name=value or --name value), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
  return value


def _config_file_problem(spec: str | None) -> str | None:
  """Why the config file of a --config value (PATH or PATH:VARIANT) gives no config: the file
  cannot be read or compiled, it has no get_config(), get_config() raises or returns something
  else than a ConfigDict; each named by the file and the line of it at fault. None when it does
  give a config (the problem is then elsewhere, an override say). Run only once loading failed."""
  if not spec:
    return None
  path, colon, variant = spec.partition(':')
  if not os.path.isfile(path):
    return None
  path = os.path.abspath(path)
  module_spec = importlib.util.spec_from_file_location('gptjax_config_file', path)
  module = importlib.util.module_from_spec(module_spec)
  step = 'running'
  try:
    module_spec.loader.exec_module(module)
    get_config = getattr(module, 'get_config', None)
    if not callable(get_config):
      return (
        f'the config file {path} has no get_config() function; a config file defines '
        'get_config() returning an ml_collections.ConfigDict'
      )
    step = 'get_config() in'
    config = get_config(*([variant] if colon else []))
  except Exception as e:  # pylint: disable=broad-except  # the user's code: report what it raised
    message = e.msg if isinstance(e, SyntaxError) else e
    where = where_raised(e, path)
    return f'{step} the config file {path} raised {type(e).__name__}: {message} ({where})'
  if not hasattr(config, 'keys'):
    return (
      f'get_config() in the config file {path} returned {type(config).__name__}, not an '
      'ml_collections.ConfigDict (a missing return?)'
    )
  return None


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
  except OSError as e:  # a path that cannot be made, read or written: the filesystem's say
    if debug or e.filename is None:
      raise
    fail(filesystem_error(e))
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)  # the conventional status of a process ended by SIGTERM
