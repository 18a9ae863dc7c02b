"""What a workdir holds beyond checkpoints: the run's config, and a lock so one run uses it at a
time."""

import fcntl
import json
import os
import tempfile
from typing import IO

import ml_collections

from gptjax import configuration
from gptjax.data import cache
from gptjax.errors import UserError


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config whose model, tokenizer or data differ from the run already in `workdir`."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    saved = flatten(configuration.read_config(path).to_dict())  # a UserError when unreadable
    now = flatten(json.loads(config.to_json()))
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


def flatten(tree: dict, prefix: str = '') -> dict:
  """A nested config (as dicts) as {dotted field: value}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def make(workdir: str) -> None:
  """Creates `workdir` (and its parents) if need be; a UserError when a file is in the way, or the
  directory cannot be made or written (found now, not at the first checkpoint)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'the workdir {workdir} is a file, not a directory; use another path')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(
      f'cannot make the workdir {workdir}: {e.filename}: {e.strerror}; make its parent '
      'directory writable (or remove the file in the way), or use another path'
    ) from e
  try:
    handle, probe = tempfile.mkstemp(prefix='.writable-', dir=workdir)
    os.close(handle)
    os.remove(probe)
  except OSError as e:
    raise UserError(
      f'cannot write in the workdir {workdir}: {e.strerror}; a run needs it writable (make it '
      'so, or use another workdir; gptjax.sample and gptjax.evaluate only read it)'
    ) from e


def lock(workdir: str) -> IO:
  """An exclusive lock on WORKDIR/.lock, held until closed or the process dies (even by SIGKILL)."""
  try:
    handle = open(os.path.join(workdir, '.lock'), 'w')
  except OSError as e:
    raise UserError(
      f'cannot write {e.filename}: {e.strerror}; a run needs its workdir {workdir} writable '
      '(gptjax.sample and gptjax.evaluate only read it)'
    ) from e
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.close()
    raise UserError(
      f'another run is using {workdir} (it holds {workdir}/.lock); wait for it to '
      'finish or use another workdir'
    ) from None
  return handle
