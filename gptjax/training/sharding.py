"""Data parallelism with jit: one mesh axis, 'data', over every device of every host.

The batch is split along 'data'. Parameters and optimizer state are either replicated on every
device (what jax.pmap did) or, with FSDP, each array is split along 'data' on its largest dimension
that divides evenly, and XLA gathers it where a computation needs the whole array.
"""

import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(distributed: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize with the config's values, else the JAX_* environment variables,
  else JAX's own cluster detection. CPU processes talk through gloo (for tests on one machine)."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  address = distributed.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  count = distributed.num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0)) or None
  process_id = (
    distributed.process_id
    if distributed.process_id >= 0
    else int(os.environ.get('JAX_PROCESS_ID', -1))
  )
  jax.distributed.initialize(
    coordinator_address=address,
    num_processes=count,
    process_id=None if process_id < 0 else process_id,
  )


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
  """A NamedSharding for every leaf of a (shape-only) state pytree."""
  n_devices = mesh.shape[DATA_AXIS]

  def sharding_of(leaf) -> NamedSharding:
    if not fsdp or leaf.ndim == 0:
      return replicated(mesh)
    divisible = [d for d in range(leaf.ndim) if leaf.shape[d] % n_devices == 0]
    if not divisible:
      return replicated(mesh)
    axis = max(divisible, key=lambda d: leaf.shape[d])
    spec = [None] * leaf.ndim
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(sharding_of, abstract_state)


def global_batch(local_rows: np.ndarray, mesh: Mesh, global_batch_size: int) -> jax.Array:
  """One global array from each process's rows (process p holds rows p*n/P .. (p+1)*n/P)."""
  return jax.make_array_from_process_local_data(
    batch_sharding(mesh), local_rows, (global_batch_size, *local_rows.shape[1:])
  )
