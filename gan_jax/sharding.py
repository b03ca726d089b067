"""Device mesh and shardings. Data parallel over the 'data' axis; parameters replicated."""

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(mesh_config, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `mesh_config.data` devices (-1: all global devices)."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices) if mesh_config.data == -1 else mesh_config.data
  if n < 1 or n > len(devices):
    raise ValueError(f'config.mesh.data={mesh_config.data}: must be -1 or between 1 and the '
                     f'{len(devices)} available devices.')
  return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def state_sharding(mesh: Mesh, abstract_state: Any) -> Any:
  """Shardings for every leaf of the train state: replicated (pure data parallelism)."""
  rep = replicated(mesh)
  return jax.tree_util.tree_map(lambda _: rep, abstract_state)


def global_batch(local_batch: dict, sharding: NamedSharding, global_batch_size: int) -> dict:
  """This process's rows -> one global jax.Array per field, sharded along the batch axis."""
  def to_global(x):
    x = np.asarray(x)
    shape = (global_batch_size,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, shape)
  return {k: to_global(v) for k, v in local_batch.items()}
