"""Train-state checkpoints with orbax: WORKDIR/checkpoints/<step>/, the newest few kept.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed
while saving leaves the previous checkpoint as the latest one.
"""
import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, state) -> None:
  """Saves `state` under its step and waits until the checkpoint is on disk."""
  mngr.save(int(state.step), args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, shardings):
  """The newest checkpoint laid out with `shardings`, or None when there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  target = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings)
  return mngr.restore(step, args=ocp.args.StandardRestore(target))
