"""The exception types of gptjax: UserError for mistakes a user can fix (config, data, paths,
checkpoints), which the command lines report as one `error:` line (gptjax/cli.py), and Preempted.
"""


class UserError(Exception):
  pass


class Preempted(Exception):
  """The run saved a checkpoint after SIGTERM and stopped; the same command continues it."""
