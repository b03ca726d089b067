"""Device mesh and shardings: data parallel over ('data', 'fsdp'); big parameters split on 'fsdp'.

The mesh has two axes, `config.mesh.data` x `config.mesh.fsdp`. The batch is split over both axes
together (every device sees batch / devices rows). With fsdp = 1 (the default) every parameter and
optimizer state is replicated: plain data parallelism. With fsdp > 1, every state leaf of at least
`config.mesh.fsdp_min_size` elements is split along its largest axis that the fsdp size divides
(FSDP / ZeRO-3 style): each device keeps 1 / fsdp of those weights and their Adam moments, and XLA
all-gathers a weight where the step uses it. The math is the same as data parallelism.

Devices go into the mesh in `jax.devices()` order (process by process), so process p's devices
hold rows [p * B / P, (p + 1) * B / P) of the global batch: the rows its input pipeline reads.
"""

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(mesh_config, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, fsdp) mesh; data = -1 takes all the devices that fsdp leaves.

  With several processes the mesh must span every global device (each process feeds its own).
  """
  devices = list(jax.devices() if devices is None else devices)
  fsdp = mesh_config.get('fsdp', 1)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp}: must be a positive divisor of the '
                     f'{len(devices)} available devices.')
  data = len(devices) // fsdp if mesh_config.data == -1 else mesh_config.data
  if data < 1 or data * fsdp > len(devices):
    raise ValueError(f'config.mesh.data={mesh_config.data} x config.mesh.fsdp={fsdp}: data must '
                     f'be -1 or between 1 and {len(devices) // fsdp} (the {len(devices)} '
                     f'available devices / fsdp).')
  if jax.process_count() > 1 and data * fsdp != jax.device_count():
    raise ValueError(f'config.mesh.data={mesh_config.data} x config.mesh.fsdp={fsdp} uses '
                     f'{data * fsdp} of the {jax.device_count()} devices of this '
                     f'{jax.process_count()}-process run; a multi-process mesh must span all '
                     'devices (set config.mesh.data=-1).')
  return Mesh(np.asarray(devices[:data * fsdp]).reshape(data, fsdp), BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data and fsdp axes together."""
  return NamedSharding(mesh, P(BATCH_AXES))


def leaf_spec(shape: Sequence[int], fsdp: int, min_size: int) -> P:
  """The partition rule: the largest axis divisible by `fsdp` of a leaf of >= min_size elements
  goes on the fsdp axis (the first such axis on ties); anything else is replicated."""
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
    return P()
  candidates = [(size, -axis) for axis, size in enumerate(shape) if size % fsdp == 0]
  if not candidates:
    return P()
  axis = -max(candidates)[1]
  return P(*([None] * axis + [FSDP_AXIS]))


def state_sharding(mesh: Mesh, abstract_state: Any, fsdp_min_size: int = 0) -> Any:
  """NamedShardings for every leaf of the train state by `leaf_spec` (replicated when fsdp=1)."""
  fsdp = mesh.shape[FSDP_AXIS]
  return jax.tree_util.tree_map(
      lambda x: NamedSharding(mesh, leaf_spec(x.shape, fsdp, fsdp_min_size)), abstract_state)


def global_batch(local_batch: dict, sharding: NamedSharding, global_batch_size: int) -> dict:
  """This process's rows -> one global jax.Array per field, sharded along the batch axis."""
  def to_global(x):
    x = np.asarray(x)
    shape = (global_batch_size,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, shape)
  return {k: to_global(v) for k, v in local_batch.items()}


def to_host(x: Any) -> Any:
  """A pytree of global arrays -> numpy on every process (an all-gather when they span processes)."""
  if jax.process_count() == 1:
    return jax.device_get(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(x, tiled=True)
