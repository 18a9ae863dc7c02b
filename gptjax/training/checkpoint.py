"""Train-state checkpoints with orbax: WORKDIR/checkpoints/<step>/, the newest few kept.

Orbax writes each checkpoint into a temporary directory and renames it once complete, so a run
killed while saving leaves the previous checkpoint as the latest one (tests/test_faults.py kills
runs to check this). On top of that, every checkpoint's fingerprint (a checksum of every bit of the
state) is recorded in WORKDIR/checkpoints/fingerprints.json; a checkpoint that fails to load or
whose bits differ from its fingerprint is moved to WORKDIR/corrupt_checkpoints/ and the previous
one is used. A save that fails (a full disk, a file size limit, a directory that cannot be written)
is one UserError that says which checkpoints are intact, and leaves no temporary directory.
"""

import contextlib
import errno
import glob
import hashlib
import json
import logging as python_logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from gptjax.data import cache
from gptjax.errors import UserError

_FINGERPRINTS = 'fingerprints.json'


def manager(workdir: str, keep: int, subdir: str = 'checkpoints') -> ocp.CheckpointManager:
  """The manager a run saves its checkpoints with, in WORKDIR/subdir (a UserError when it could
  not write them)."""
  directory = os.path.join(os.path.abspath(workdir), subdir)
  problem = _unwritable(directory)
  if problem:
    raise UserError(
      f'cannot write checkpoints in {directory}: {problem.strerror}; make it writable (or use '
      'another workdir) and run the same command again'
    )
  return ocp.CheckpointManager(
    directory,
    # A step directory orbax left under its temporary name (a run killed mid-save) is removed
    # when the next run opens the workdir: only the lock holder writes it, so no save is underway.
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, cleanup_tmp_directories=True
    ),
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
  """Saves `state` under its step, waits until it is on disk, then records its fingerprint.

  A save that fails (a full disk, `ulimit -f`, a read-only directory) is a UserError naming the
  checkpoint, the reason and the checkpoints still intact; its temporary directory is removed and
  orbax's tracebacks of the failed writes are not shown."""
  step = int(state.step)
  digest = fingerprint(state)
  directory = str(mngr.directory)
  problem = _unwritable(directory)  # orbax would wait minutes for a step directory it cannot make
  if problem:
    raise UserError(_save_failure(directory, step, problem, mngr))
  try:
    with quiet_orbax_errors():
      mngr.save(step, args=ocp.args.StandardSave(state), force=True)
      mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  # orbax and tensorstore raise many kinds
    _remove_temporary(directory, step)
    raise UserError(_save_failure(directory, step, e, mngr)) from e
  if jax.process_index() == 0:
    fingerprints = _read_fingerprints(mngr, warn=False)  # restore_latest warned of a bad one
    fingerprints = {s: d for s, d in fingerprints.items() if int(s) in mngr.all_steps()}
    fingerprints[str(step)] = digest
    path = os.path.join(directory, _FINGERPRINTS)
    try:
      cache.write_atomic(path, json.dumps(fingerprints))
    except OSError as e:
      raise UserError(
        f'checkpoint {step} was saved in {directory} but its fingerprint could not be recorded '
        f'in {path} ({e.strerror}); free space (or fix the permissions) and run the same command: '
        'the checkpoint is restored without a fingerprint check'
      ) from e


def _unwritable(directory: str) -> OSError | None:
  """Why no file can be made in `directory` (created if need be), or None when one can."""
  try:
    os.makedirs(directory, exist_ok=True)
    handle, probe = tempfile.mkstemp(prefix='.writable-', dir=directory)
    os.close(handle)
    os.remove(probe)
  except OSError as e:
    return e
  return None


def close(mngr: ocp.CheckpointManager) -> None:
  """Closes a manager; the errors of a save that failed were reported when it did."""
  try:
    with quiet_orbax_errors():
      mngr.close()
  except Exception:  # pylint: disable=broad-except  # save() raised this one already
    pass


@contextlib.contextmanager
def quiet_orbax_errors() -> Iterator[None]:
  """orbax logs each failed read or write of a checkpoint with its traceback (at ERROR) before it
  raises, and asyncio one more for each of its other reads or writes left unawaited ("Task
  exception was never retrieved"): gptjax reports the failure in one line instead. After a failure
  asyncio's logger stays quiet, as its tasks' tracebacks come when they are collected."""
  _silence_abandoned_writes()
  absl_logger = python_logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(python_logging.CRITICAL)
  try:
    yield
  except Exception:
    python_logging.getLogger('asyncio').setLevel(python_logging.CRITICAL)
    raise
  finally:
    absl_logger.setLevel(level)


def unreadable_reason(error: BaseException) -> str:
  """A short reason a checkpoint could not be read, for a one-line message: not TensorStore's
  dump of its spec. Names the file at fault where the error does."""
  texts = []
  while error is not None and len(texts) < 5:
    texts.append(' '.join(str(error).split()))
    error = error.__cause__ or error.__context__
  text = ' '.join(texts)
  named = re.findall(r'file "([^"]+)"', text)  # the last is the innermost: the file at fault
  where = f' ({named[-1]})' if named else ''
  if 'NOT_FOUND' in text or 'No such file' in text:
    return f'a file of it is missing{where}'
  status = re.search(
    r'\b(DATA_LOSS|OUT_OF_RANGE|INVALID_ARGUMENT|FAILED_PRECONDITION|INTERNAL):', text
  )
  if status or 'Error decoding' in text or 'Encountered error while reading' in text:
    return f'its files are damaged{where}'
  first = texts[0].split('. See full TensorStore details')[0]
  return f'{first[:150]}{where}'


_NOISE = ('Event loop is closed', 'sys.meta_path is None')


def _silence_abandoned_writes() -> None:
  """When one read or write of a checkpoint fails, orbax's others finish (or are collected at
  exit) on an event loop that is already closed, and Python would print a traceback for each
  ("Event loop is closed", "Exception ignored in: <coroutine ...>"): they say nothing the one
  warning: or error: line does not. Only those are silenced (for the rest of the process)."""
  previous = sys.unraisablehook
  if getattr(previous, 'gptjax_quiet', False):
    return

  def hook(unraisable) -> None:
    code = getattr(unraisable.object, 'cr_code', None)  # an orbax coroutine closed unawaited
    if code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename:
      return
    if not any(n in str(unraisable.exc_value) for n in _NOISE):
      previous(unraisable)

  hook.gptjax_quiet = True
  sys.unraisablehook = hook


def _remove_temporary(directory: str, step: int) -> None:
  """Removes what a failed save of `step` left under orbax's temporary name (retrying while its
  abandoned writes end)."""
  if jax.process_index() != 0:
    return
  for _ in range(20):
    leftovers = glob.glob(os.path.join(glob.escape(directory), f'{step}.orbax-checkpoint-tmp*'))
    if not leftovers:
      return
    for path in leftovers:
      shutil.rmtree(path, ignore_errors=True)
    time.sleep(0.05)


def _save_failure(directory: str, step: int, error: BaseException, mngr) -> str:
  """The one line of a failed save: which checkpoint, why, what is intact and what to do."""
  text = ' '.join(str(error).split())
  code = re.search(r"os_error_code='(\d+)'", text)
  number = int(code.group(1)) if code else getattr(error, 'errno', None)
  if number:
    reason = os.strerror(number)
    if number in (errno.ENOSPC, errno.EDQUOT):
      advice = 'free space'
    elif number == errno.EFBIG:
      reason += ' (a file size limit: ulimit -f)'
      advice = 'raise the file size limit'
    elif number in (errno.EACCES, errno.EPERM, errno.EROFS):
      advice = f'make {directory} writable'
    else:
      advice = 'fix the cause'
  else:
    reason, advice = text[:200], 'fix the cause'
  try:
    mngr.reload()
    intact = [s for s in mngr.all_steps() if s != step]
  except Exception:  # pylint: disable=broad-except  # the directory itself may be unreadable
    intact = []
  if intact:
    kept = f'checkpoints {sorted(intact)} are intact'
    then = f'run the same command to resume from step {max(intact)}'
  else:
    kept, then = 'no earlier checkpoint exists', 'run the same command to start again'
  return (
    f'could not save checkpoint {step} in {directory}: {reason}; nothing of it was kept and '
    f'{kept}; {advice}, then {then}'
  )


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
      with quiet_orbax_errors():  # in OCDBT the arrays' metadata is in the data files
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
      with quiet_orbax_errors():
        state = mngr.restore(step, args=ocp.args.StandardRestore(target))
      problem = None
      if str(step) in expected and fingerprint(state) != expected[str(step)]:
        problem = 'its contents do not match the fingerprint recorded when it was saved'
    except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many kinds
      problem = f'it cannot be read: {unreadable_reason(e)}'
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
