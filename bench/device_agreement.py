"""Is a many-device vs 1-device difference the sharding, or the step amplifying rounding?

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/device_agreement.py \
      --config experiments/ffhq_stylegan3.py:tiny --steps 6 \
      --config.augment.pipe=bgc --fixed_p 0.5

Runs the same steps (random images and labels from a fixed seed, no data reading) three times
from the same initial state: on 1 device, on every device, and on 1 device with the initial G and
D weights multiplied by 1 +- eps (a change the size of float rounding). After every step it prints,
over D's and G's layers, the worst difference relative to each layer's largest value: all devices
vs 1, the perturbed run vs 1, and all devices vs the perturbed run. If the sharded run is as far
from the plain one as the perturbed run is, and close to the perturbed one, the step (not the
sharding) amplifies rounding; a sharding error shows as a sharded run far from both. A diagnosis,
never a test.
"""

import sys

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from gan_jax import config_base
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import pipeline


def _perturb(tree, eps: float, seed: int):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      x * (1 + eps * jax.random.rademacher(k, x.shape, x.dtype)) for x, k in zip(leaves, keys)])


def run(config, info: pipeline.DataInfo, devices, steps: int, eps: float = 0.0):
  """Host copies of (d_params, g_params) after each of `steps` steps on `devices`."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp = len(devices), 1
  G, D, c_dim = train.build(config, info)
  mesh = sharding.make_mesh(config.mesh, devices)
  _, state_shard, bshard, step_def, step_fn = train.sharded_step(config, mesh, G, D, c_dim)

  def create(key):
    state = state_lib.create(G, D, step_def.g_tx, step_def.d_tx, c_dim, key, config.augment.p)
    if eps:
      state = state.replace(d_params=_perturb(state.d_params, eps, 1),
                            g_params=_perturb(state.g_params, eps, 2))
    return state

  state = jax.jit(create, out_shardings=state_shard)(jax.random.PRNGKey(config.seed))
  n, rng, out = config.schedule.batch_size, np.random.default_rng(0), []
  for step in range(steps):
    batch = sharding.global_batch(
        {'image': rng.uniform(-1, 1, (n, info.resolution, info.resolution, info.channels)
                              ).astype(np.float32),
         'label': rng.integers(0, max(info.num_classes, 1), n).astype(np.int32)}, bshard, n)
    state, _ = step_fn(state, batch, np.float32(1), np.int32(0), info.resolution,
                       step_def.variant(step))
    out.append(jax.device_get((state.d_params, state.g_params)))
  return out


def worst(a, b) -> tuple[float, str]:
  """The largest |a - b| relative to the layer's largest |a|, and that layer's path."""
  rows = [(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-30)), jax.tree_util.keystr(p))
          for (p, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b))]
  return max(rows)


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  config_base.migrate(config, config_flags.get_override_values(FLAGS['config']))
  if FLAGS.fixed_p >= 0:  # (--config.augment.target=None does not parse as a flag)
    config.augment.target, config.augment.p = None, FLAGS.fixed_p
  bench = config.get('bench', None)
  if FLAGS.resolution and FLAGS.channels:
    info = pipeline.DataInfo(FLAGS.resolution, FLAGS.channels, 0, num_examples=0)
  elif bench is not None:
    info = pipeline.DataInfo(bench.resolution, bench.channels, 0, num_examples=0)
  else:
    info = pipeline.dataset_info(config.data)
  if len(jax.devices()) < 2:
    sys.exit('One device only: set XLA_FLAGS=--xla_force_host_platform_device_count=8 (CPU).')
  one = jax.devices()[:1]
  plain = run(config, info, one, FLAGS.steps)
  sharded = run(config, info, jax.devices(), FLAGS.steps)
  perturbed = run(config, info, one, FLAGS.steps, FLAGS.eps)
  print(f'{len(jax.devices())} devices vs 1, and 1 device with weights x (1 +- {FLAGS.eps:g}); '
        'worst relative difference of a layer')
  print(f'{"step":>4s} {"net":3s} {"sharded-plain":>14s} {"perturbed-plain":>16s} '
        f'{"sharded-perturbed":>18s}  worst layer (sharded-plain)')
  for step, (p, s, e) in enumerate(zip(plain, sharded, perturbed)):
    for i, net in enumerate(('D', 'G')):
      sp, where = worst(p[i], s[i])
      print(f'{step:4d} {net:3s} {sp:14.2e} {worst(p[i], e[i])[0]:16.2e} '
            f'{worst(s[i], e[i])[0]:18.2e}  {where}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Experiment config; --config.KEY=VALUE overrides.',
                                  lock_config=True)
  flags.DEFINE_integer('steps', 6, 'steps per run')
  flags.DEFINE_float('eps', 1e-7, 'relative perturbation of the initial weights')
  flags.DEFINE_float('fixed_p', -1.0, 'ADA: this fixed p (augment.target None); -1: the config')
  flags.DEFINE_integer('resolution', 0, "image size (default: the config's bench or dataset)")
  flags.DEFINE_integer('channels', 0, 'image channels (default: likewise)')
  flags.mark_flags_as_required(['config'])
  app.run(main)
