"""What a workdir holds beyond checkpoints: the run's config, and a lock so one run uses it at a
time."""

import fcntl
import json
import os
from typing import IO

import ml_collections

from gptjax import configuration
from gptjax.data import cache
from gptjax.errors import UserError


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config whose model, tokenizer or data differ from the run already in `workdir`."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    saved = _flatten(configuration.read_config(path).to_dict())  # a UserError when unreadable
    now = _flatten(json.loads(config.to_json()))
    # A field the saved config lacks was added to gptjax after the run started; its default keeps
    # the old behaviour, so it is not a change.
    changed = [
      f'{k} {saved.get(k)!r} -> {now.get(k)!r}'
      for k in sorted(saved)
      if saved[k] != now.get(k) and k not in configuration.RESUMABLE
    ]
    if changed:
      raise UserError(
        f'the config differs from the run in {workdir}: {"; ".join(changed)} (only '
        'the fields gptjax.configuration.FIELDS marks resumable, such as train.*, '
        'sample.* and model.dtype, may change; use a new workdir)'
      )


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Records `config` as the workdir's run (once its data loaded, so a typo is not recorded)."""
  path = os.path.join(workdir, 'config.json')
  cache.write_atomic(path, config.to_json(indent=1))


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def lock(workdir: str) -> IO:
  """An exclusive lock on WORKDIR/.lock, held until closed or the process dies (even by SIGKILL)."""
  handle = open(os.path.join(workdir, '.lock'), 'w')
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.close()
    raise UserError(
      f'another run is using {workdir} (it holds {workdir}/.lock); wait for it to '
      'finish or use another workdir'
    ) from None
  return handle
