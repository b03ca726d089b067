"""The FSDP mesh axis: partition rules, the same training as data parallelism, and checkpoints that
restore across the two layouts."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gan_jax import checkpointing
from gan_jax import config_base
from gan_jax import optim
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import pipeline
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import _leaves, _run_steps, assert_runs_agree, tiny_config


@pytest.mark.parametrize('shape,fsdp,min_size,spec', [
    ((3, 3, 8, 8), 4, 0, P(None, None, 'fsdp')),  # largest divisible axis; first of equal ones
    ((128, 16), 4, 0, P('fsdp')),
    ((16, 128), 4, 0, P(None, 'fsdp')),
    ((3, 3, 6, 4), 4, 0, P(None, None, None, 'fsdp')),  # 6 does not divide by 4, 4 does
    ((6, 3), 4, 0, P()),  # nothing divisible: replicated
    ((128, 16), 4, 128 * 16 + 1, P()),  # below the size threshold
    ((128, 16), 4, 128 * 16, P('fsdp')),  # at it
    ((128, 16), 1, 0, P()),  # fsdp = 1: data parallel
    ((), 4, 0, P()),  # scalars (step, pl_mean, Adam's count)
])
def test_partition_rule(shape, fsdp, min_size, spec):
  assert sharding.leaf_spec(shape, fsdp, min_size) == spec


def test_mesh_shapes_and_errors():
  base = config_base.get_base_config().mesh
  base.fsdp = 4
  mesh = sharding.make_mesh(base)
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 4}
  # The batch goes over data x fsdp in jax.devices() order: device i holds rows [i, i + 1) of 8.
  rows = sharding.batch_sharding(mesh).devices_indices_map((8,))
  assert [rows[d][0].start for d in jax.devices()] == list(range(8))
  base.fsdp = 3
  with pytest.raises(ValueError, match='config.mesh.fsdp=3'):
    sharding.make_mesh(base)
  base.fsdp, base.data = 4, 4
  with pytest.raises(ValueError, match=r'data=4 x config.mesh.fsdp=4'):
    sharding.make_mesh(base)


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist_fsdp')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


@pytest.fixture(scope='module')
def two_runs(fake_source):
  """Step 0 (G, path length, D, R1 and EMA: every phase) on data=8 and on data=2 x fsdp=4. One
  compile each; the data=8 one is tests/test_train.py's (shared through the compile cache)."""
  dp = _run_steps(tiny_config(fake_source), jax.devices(), 1)
  fsdp = _run_steps(tiny_config(fake_source, **{'mesh.data': 2, 'mesh.fsdp': 4}),
                    jax.devices(), 1)
  return dp, fsdp


def test_fsdp_shards_the_state(two_runs):
  """After a step every leaf still has its rule's sharding; each device holds 1/4 of the
  sharded ones (G, D, G_ema and both Adam states)."""
  _, (state, _) = two_runs
  leaves = jax.tree_util.tree_leaves(state)
  sharded = 0
  for leaf in leaves:
    spec = leaf.sharding.spec
    assert spec == sharding.leaf_spec(leaf.shape, 4, 0)
    if 'fsdp' in spec:
      sharded += 1
      axis = list(spec).index('fsdp')
      assert leaf.addressable_shards[0].data.shape[axis] * 4 == leaf.shape[axis]
  assert sharded > len(leaves) // 2, (sharded, len(leaves))
  for tree in (state.g_opt, state.d_opt, state.ema_params):
    assert any('fsdp' in leaf.sharding.spec for leaf in jax.tree_util.tree_leaves(tree))


def test_fsdp_trains_like_data_parallel(two_runs):
  (s_dp, m_dp), (s_fsdp, m_fsdp) = two_runs
  assert_runs_agree(m_dp, m_fsdp, s_dp, s_fsdp, 'fsdp vs data parallel')


def _abstract(config, fsdp_min_size=0):
  info = pipeline.dataset_info(config.data)
  G, D, c_dim = train.build(config, info)
  g_tx, d_tx = optim.make_optimizers(config)
  mesh = sharding.make_mesh(config.mesh)
  abstract = state_lib.abstract(G, D, g_tx, d_tx, c_dim)
  shard = sharding.state_sharding(mesh, abstract, fsdp_min_size)
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shard)


@pytest.mark.parametrize('save_fsdp', [True, False])
def test_checkpoint_restores_in_the_other_layout(two_runs, fake_source, tmp_path, save_fsdp):
  (s_dp, _), (s_fsdp, _) = two_runs
  saved = s_fsdp if save_fsdp else s_dp
  target = _abstract(tiny_config(fake_source, **({} if save_fsdp else
                                                  {'mesh.data': 2, 'mesh.fsdp': 4})))
  mngr = checkpointing.manager(str(tmp_path), config_base.get_base_config().checkpoint)
  checkpointing.save(mngr, saved, {'step': 1})
  checkpointing.finish(mngr)
  mngr = checkpointing.manager(str(tmp_path), config_base.get_base_config().checkpoint)
  restored, meta = checkpointing.restore_step(mngr, 1, target)
  mngr.close()
  assert meta == {'step': 1}
  for leaf, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
    assert leaf.sharding == want.sharding
  for a, b in zip(_leaves(restored), _leaves(saved)):
    np.testing.assert_array_equal(a, b)
