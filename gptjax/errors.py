"""The exception types of gptjax: UserError for mistakes a user can fix (config, data, paths,
checkpoints), which the command lines report as one `error:` line (gptjax/cli.py), and Preempted.
"""

import os
import traceback


class UserError(Exception):
  pass


class Preempted(Exception):
  """The run saved a checkpoint after SIGTERM and stopped; the same command continues it."""


def where_raised(error: BaseException, path: str) -> str:
  """The line of the user's file `path` where `error` was raised (the deepest frame in that
  file): what an error line about a config or sweep file points to."""
  if isinstance(error, SyntaxError) and error.filename and error.lineno:
    return f'{error.filename}, line {error.lineno}'
  line = None
  for frame, lineno in traceback.walk_tb(error.__traceback__):
    if os.path.abspath(frame.f_code.co_filename) == path:
      line = f'{path}, line {lineno}, in {frame.f_code.co_name}'
  if line is None:
    return path
  deepest = traceback.extract_tb(error.__traceback__)[-1]
  if os.path.abspath(deepest.filename) != path:  # raised by code the config file called
    line += f' (raised in {deepest.filename}, line {deepest.lineno})'
  return line
