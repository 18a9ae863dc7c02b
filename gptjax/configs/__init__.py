"""The shipped configs. Each module has get_config() (some take a variant: 'finetune:cpu').

A command's --config takes a path to a config file or the name of one of these (`tiny`,
`finetune:cpu`); see resolve.
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(DIRECTORY) if f.endswith('.py') and f != '__init__.py')


def resolve(spec: str) -> str:
  """A --config value as config_flags takes it: a path (with an optional ':variant') is returned
  as it is; the name of a shipped config becomes the path of its file."""
  path, colon, variant = spec.partition(':')
  if os.path.exists(path) or not path or os.sep in path or path.endswith('.py'):
    return spec
  if path in names():
    return os.path.join(DIRECTORY, path + '.py') + colon + variant
  return spec
