"""The one exception type for mistakes a user can fix (config, data, paths, checkpoints).

`gptjax.main` prints its message as a single line and exits with status 1, without a traceback.
"""


class UserError(Exception):
  pass
