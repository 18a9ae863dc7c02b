"""Train-state checkpoints with orbax: WORKDIR/checkpoints/<step>/, the newest few kept.

Orbax writes each checkpoint into a temporary directory and renames it once complete, so a run
killed while saving leaves the previous checkpoint as the latest one (tests/test_faults.py kills
runs to check this). On top of that, every checkpoint's fingerprint (a checksum of every bit of the
state) is recorded in WORKDIR/checkpoints/fingerprints.json; a checkpoint that fails to load or
whose bits differ from its fingerprint is moved to WORKDIR/corrupt_checkpoints/ and the previous
one is used.
"""

import hashlib
import json
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from gptjax.data import cache
from gptjax.errors import UserError

_FINGERPRINTS = 'fingerprints.json'


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), 'checkpoints'),
    options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
  )


@jax.jit
def _leaf_checksums(state) -> list[jax.Array]:
  """Per leaf, the sum of its bits as uint32 weighted by (2 * index + 1): any flipped, lost or moved
  value changes it (with overwhelming probability)."""

  def checksum(leaf):
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[leaf.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
    weights = 2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1
    return jnp.sum(bits.reshape(-1) * weights, dtype=jnp.uint32)

  return [checksum(leaf) for leaf in jax.tree.leaves(state)]


def fingerprint(state) -> str:
  """A short hex digest of every bit of `state` (all processes must call it: it is a collective)."""
  sums = np.array(
    multihost_utils.process_allgather(_leaf_checksums(state), tiled=True), dtype=np.uint32
  )
  return hashlib.sha256(sums.tobytes()).hexdigest()[:24]


def save(mngr: ocp.CheckpointManager, state) -> None:
  """Saves `state` under its step, waits until it is on disk, then records its fingerprint."""
  step = int(state.step)
  digest = fingerprint(state)
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()
  if jax.process_index() == 0:
    fingerprints = _read_fingerprints(mngr, warn=False)  # restore_latest warned of a bad one
    fingerprints = {s: d for s, d in fingerprints.items() if int(s) in mngr.all_steps()}
    fingerprints[str(step)] = digest
    path = os.path.join(str(mngr.directory), _FINGERPRINTS)
    cache.write_atomic(path, json.dumps(fingerprints))


def _read_fingerprints(mngr: ocp.CheckpointManager, warn: bool = True) -> dict[str, str]:
  """The recorded fingerprints by step; {} when there is no record, and when it is unreadable
  (with a warning: line): the checkpoints are then restored unverified, and the next save
  rewrites the record."""
  path = os.path.join(str(mngr.directory), _FINGERPRINTS)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      fingerprints = json.load(f)
    problem = None
    if not isinstance(fingerprints, dict) or not all(
      isinstance(v, str) for v in fingerprints.values()
    ):
      problem = 'not a JSON object of fingerprints'
  except ValueError as e:  # not JSON, or not UTF-8 at all
    problem = ' '.join(str(e).split())[:200]
  if problem is None:
    return fingerprints
  if warn and jax.process_index() == 0:
    print(
      f'warning: {path} is unreadable ({problem}); restoring checkpoints without checking their '
      'fingerprints (the next checkpoint saved rewrites it)',
      file=sys.stderr,
    )
  return {}


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """Each leaf's shape by its path ('opt_state/1/0/mu/wte/embedding'), however the tree's nodes
  name their children (attributes, dict keys, indices)."""

  def name(entry) -> str:
    for attribute in ('key', 'name', 'idx'):
      if hasattr(entry, attribute):
        return str(getattr(entry, attribute))
    return str(entry)

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(name(e) for e in path): tuple(leaf.shape) for path, leaf in leaves}


def check_shapes(directory: str, step: int, abstract_tree, part: str = '') -> None:
  """Raises UserError, touching nothing, when checkpoint `step` in `directory` holds a tree of
  other leaves or shapes than `abstract_tree` (its subtree `part`, e.g. 'params', if given): the
  config is not the one the run was trained with, which is not damage. Returns quietly when the
  checkpoint's metadata cannot be read; restoring it then reports the damage."""
  try:
    reader = read_only_manager(directory)
    try:
      saved = reader.item_metadata(step)
    finally:
      reader.close()
    saved = _shapes(saved[part] if part else saved)
  except Exception:  # pylint: disable=broad-except  # unreadable metadata is damage, found later
    return
  expected = _shapes(abstract_tree)
  differences = [
    f'{path}: saved {saved.get(path)}, this config {expected.get(path)}'
    for path in sorted(set(saved) | set(expected))
    if saved.get(path) != expected.get(path)
  ]
  if differences:
    more = f' and {len(differences) - 3} more' if len(differences) > 3 else ''
    raise UserError(
      f'checkpoint {step} in {directory} holds other parameters than this config builds ('
      + '; '.join(differences[:3])
      + f'{more}): the config is not the one the run was trained with; nothing was changed'
    )


def read_only_manager(directory: str, item_handler=None) -> ocp.CheckpointManager:
  """A manager of `directory` that reads and never writes (orbax's notice that it saves nothing
  is not shown); item_handler defaults to the StandardCheckpointHandler checkpoints are saved
  with."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return ocp.CheckpointManager(
      directory,
      item_handlers=item_handler or ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True),
    )
  finally:
    logging.set_verbosity(verbosity)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, shardings):
  """The newest intact checkpoint laid out with `shardings`, or None when there is no checkpoint.

  A checkpoint that cannot be read, or whose fingerprint does not match, is reported in one line
  and set aside; if none can be restored the run stops rather than silently starting over. One
  whose shapes differ from the config's is a config problem: a UserError, and nothing is moved.
  """
  target = jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
    abstract_state,
    shardings,
  )
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None
  expected = _read_fingerprints(mngr)
  for step in steps:
    check_shapes(str(mngr.directory), step, abstract_state)
    try:
      state = mngr.restore(step, args=ocp.args.StandardRestore(target))
      problem = None
      if str(step) in expected and fingerprint(state) != expected[str(step)]:
        problem = 'its contents do not match the fingerprint recorded when it was saved'
    except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many kinds
      problem = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]
    if problem is None:
      return state
    _set_aside(mngr, step, problem)
  raise UserError(
    f'none of the checkpoints {steps} in {mngr.directory} could be restored (they '
    'are now in corrupt_checkpoints/); refusing to start from scratch over them (gptjax.main '
    '--start_over would)'
  )


def check_not_starting_over(workdir: str, start_over: bool = False) -> None:
  """Refuses to train `workdir` from step 0 when all its checkpoints were set aside as damaged
  (they are in corrupt_checkpoints/): the run that found them refused, and running the same
  command again must not quietly start over. start_over (gptjax.main --start_over) says to."""
  directory = os.path.join(workdir, 'checkpoints')
  steps = [d for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
  aside = os.path.join(workdir, 'corrupt_checkpoints')
  if steps or start_over or not (os.path.isdir(aside) and os.listdir(aside)):
    return
  raise UserError(
    f'{workdir} has no checkpoint left to resume from: every one was set aside as damaged, in '
    f'{aside}; put one back as checkpoints/<step> to resume from it, or pass --start_over to '
    'train from step 0 anyway'
  )


def restore_run(workdir: str, abstract_state, shardings, keep: int):
  """The newest intact checkpoint of a finished or running workdir, for reading it back; a
  UserError when it has none."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):  # checked first: manager() creates it
    raise UserError(f'no checkpoint in {workdir}/checkpoints')
  mngr = manager(workdir, keep)
  try:
    state = restore_latest(mngr, abstract_state, shardings)
  finally:
    mngr.close()
  if state is None:
    raise UserError(f'no checkpoint in {workdir}/checkpoints')
  return state


def _set_aside(mngr: ocp.CheckpointManager, step: int, problem: str) -> None:
  directory = str(mngr.directory)
  if jax.process_index() == 0:
    print(
      f'warning: checkpoint {step} is unusable ({problem}); moved to corrupt_checkpoints/, '
      'trying the previous one',
      file=sys.stderr,
    )
    aside = os.path.join(os.path.dirname(directory), 'corrupt_checkpoints')
    os.makedirs(aside, exist_ok=True)
    shutil.move(
      os.path.join(directory, str(step)), os.path.join(aside, f'{step}-{int(time.time())}')
    )
  multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
  mngr.reload()
