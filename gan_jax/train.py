"""train_and_evaluate(config, workdir): mesh, data, state, the jitted step and the loop."""

from absl import logging
import math
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from clu import metric_writers
from etils import epath

from gan_jax import checkpointing
from gan_jax import config_check
from gan_jax import guard
from gan_jax import images as images_lib
from gan_jax import models
from gan_jax import optim
from gan_jax import preemption
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train_step as train_step_lib
from gan_jax import workdir as workdir_lib
from gan_jax.data import pipeline
from gan_jax.metrics import periodic


def total_steps(train_config) -> int:
  """Steps in the run: config.train.kimg worth of images, capped by config.train.max_steps."""
  steps = math.ceil(train_config.kimg * 1000 / train_config.batch_size)
  if train_config.max_steps > 0:
    steps = min(steps, train_config.max_steps)
  return steps


def build(config, info: pipeline.DataInfo, backend: Optional[str] = None):
  """(G, D, c_dim) for the config and the dataset it trains on, compiled for `backend` (default:
  JAX's default backend; it decides whether model.num_bf16_res applies)."""
  c_dim = info.num_classes if config.model.conditional else 0
  G, D = models.build(config.model, info.resolution, info.channels, c_dim, backend)
  return G, D, c_dim


def sharded_step(config, mesh, G, D, g_tx, d_tx, c_dim: int):
  """(abstract state with shardings, state shardings, batch sharding, StepConfig, jitted step):
  the train step exactly as the loop runs it; `gan_jax.aot` compiles this for a TPU topology."""
  rep, batch_shard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  abstract = state_lib.abstract(G, D, g_tx, d_tx, c_dim)
  state_shard = sharding.state_sharding(mesh, abstract, config.mesh.fsdp_min_size)
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shard)
  step_cfg = train_step_lib.StepConfig.from_config(config.train, c_dim, config.augment)
  step_fn = train_step_lib.jit_train_step(
      train_step_lib.make_train_step(G, D, g_tx, d_tx, step_cfg, batch_shard),
      state_shard, batch_shard, rep)
  return abstract, state_shard, batch_shard, step_cfg, step_fn


def make_generate_fn(G, mesh: Optional[jax.sharding.Mesh] = None):
  """jit(ema_params, ema_buffers, z, c, psi) -> images, noise_mode 'const' (reproducible).

  With a mesh, the latents and the images are replicated over it: every process of a
  multi-process run gets all the images (the params keep whatever sharding they have)."""
  def generate(params, buffers, z, c, psi):
    return G.apply({'params': params, 'buffers': buffers}, z, c, truncation_psi=psi,
                   noise_mode='const')
  if mesh is None:
    return jax.jit(generate)
  rep = sharding.replicated(mesh)
  jitted = jax.jit(generate, out_shardings=rep)
  return lambda params, buffers, z, c, psi: jitted(params, buffers, *jax.device_put((z, c, psi),
                                                                                     rep))


def grid_latents(config, G, c_dim: int):
  """Fixed latents (and labels cycling through the classes) for the sample grid."""
  n = config.log.grid_rows * config.log.grid_cols
  rng = np.random.default_rng([config.seed, 12345])
  z = rng.standard_normal((n, G.z_dim)).astype(np.float32)
  c = (np.eye(c_dim, dtype=np.float32)[np.arange(n) % c_dim] if c_dim
       else np.zeros((n, 0), np.float32))
  return z, c


def _average(metrics_list: Sequence[dict]) -> dict:
  """Means over the tick of every metric (regularisers only count the steps that ran them)."""
  fetched = jax.device_get(list(metrics_list))
  out = {}
  for key in sorted({k for m in fetched for k in m}):
    out[key] = float(np.mean([m[key] for m in fetched if key in m]))
  return out


def tick_report(tick_metrics: Sequence[dict], elapsed: float, images_done: int, kimg: float,
                kimg_left: float) -> tuple[dict, str]:
  """A tick's scalars (means over the tick, then timing and progress) and its progress text
  (`kimg  sec/kimg  img/s  ETA  G  D`); both training loops add their own fields."""
  scalars = _average(tick_metrics)
  sec_per_kimg = elapsed / (images_done / 1000)
  img_per_sec = images_done / elapsed
  scalars.update({'timing/sec_per_kimg': sec_per_kimg, 'timing/img_per_sec': img_per_sec,
                  'progress/kimg': kimg})
  text = (f'kimg {kimg:.2f}  sec/kimg {sec_per_kimg:.2f}  img/s {img_per_sec:.1f}  '
          f'ETA {_fmt_time(sec_per_kimg * kimg_left)}  G {scalars["loss/G"]:.3f}  '
          f'D {scalars["loss/D"]:.3f}')
  return scalars, text


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def train_and_evaluate(config, workdir: str, devices: Optional[Sequence[jax.Device]] = None):
  """Trains (resuming from the workdir when it holds checkpoints); returns the final state."""
  if '://' not in str(workdir):
    workdir = os.path.abspath(workdir)  # Orbax wants absolute paths; keep gs://... as given
  workdir_path = epath.Path(workdir)
  is_main = jax.process_index() == 0
  mesh = sharding.make_mesh(config.mesh, devices)
  config_check.validate(config, mesh.size)  # before any data is read or anything compiled
  # Process 0 prepares the dataset and checks the workdir; the others wait for it, then read them.
  # config.json is written only once a state is restored or initialised (`record_start`): a start
  # that fails leaves the workdir as it found it.
  interrupted = []
  if is_main:
    info = pipeline.dataset_info(config.data)
    config_check.validate_resolution(info.resolution)
    workdir_lib.check_compatible(workdir_path, config, config.start_over)
    interrupted = workdir_lib.report_incomplete(workdir_path)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('gan_jax: dataset and workdir ready')
  if not is_main:
    info = pipeline.dataset_info(config.data)
    config_check.validate_resolution(info.resolution)
  if config.get('progressive') is not None and config.progressive.enabled:
    # ProGAN / StyleGAN growing: its own loop (imported here: it uses this module's helpers).
    from gan_jax import train_progressive  # pylint: disable=g-import-not-at-top
    return train_progressive.train(config, workdir, workdir_path, mesh, info, is_main,
                                   interrupted)
  G, D, c_dim = build(config, info)
  g_tx, d_tx = optim.make_optimizers(config.train)
  batch_size = config.train.batch_size

  abstract, state_shard, batch_shard, step_cfg, step_fn = sharded_step(config, mesh, G, D, g_tx,
                                                                       d_tx, c_dim)
  init_fn = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k, config.augment.p),
                    out_shardings=state_shard)

  ckpt = checkpointing.manager(workdir, config.checkpoint)
  state, _, source = checkpointing.restore_or_init(
      ckpt, abstract, lambda: init_fn(jax.random.PRNGKey(config.seed)), config.resume,
      interrupted)
  workdir_lib.record_start(workdir_path, config, is_main)
  step = int(jax.device_get(state.step))
  num_steps = total_steps(config.train)
  logging.info('Start from %s (step %d of %d). G %d params, D %d params, %d devices.', source,
               step, num_steps, state_lib.param_count(state.g_params),
               state_lib.param_count(state.d_params), mesh.size)

  generate = make_generate_fn(G, mesh)
  grid_z, grid_c = grid_latents(config, G, c_dim)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                asynchronous=False)
  hparams = optim.effective_hparams(config.train)
  evals = periodic.PeriodicEvals(config, workdir, mesh, G, writer, is_main)  # config.evals

  def write_grid(state, step):
    images = images_lib.to_uint8(generate(state.ema_params, state.ema_buffers, grid_z, grid_c,
                                          jnp.float32(config.log.grid_psi)))
    grid = images_lib.make_grid(images, config.log.grid_cols)
    if is_main:
      writer.write_images(step, {'samples': grid[None]})
      images_lib.save_png(workdir_path / f'samples_{step:07d}.png', grid)

  def save(state, step):
    checkpointing.save(ckpt, state, {'step': step, 'kimg': step * batch_size / 1000})

  def open_data(step):
    return pipeline.InputPipeline(config.data, batch_size, config.seed, jax.process_index(),
                                  jax.process_count(), start_step=step)

  rollbacks = 0

  def finite_or_rollback(unchecked):
    """None when all is finite; else the last good state (nonfinite_action='rollback') or raise."""
    nonlocal rollbacks
    try:
      guard.check_finite(unchecked)
      return None
    except guard.NonFiniteError as error:
      rollbacks += 1
      good, _ = guard.rollback(error, ckpt, abstract, config.train, rollbacks)
      return good

  data = open_data(step)
  compiled_variants = set()
  compile_sec = 0.0
  tick_metrics, tick_start, tick_step = [], time.time(), step
  unchecked = []  # (step, metrics) not yet checked for non-finite values
  with preemption.StopRequest() as stop:
    try:
      # Every process takes part in gathering step 0's global batch; process 0 writes it.
      reals = sharding.to_host(sharding.global_batch(data.batch_at(0), batch_shard,
                                                     batch_size))['image']
      if is_main and not (workdir_path / 'reals.png').exists():
        reals = images_lib.to_uint8(reals)[:config.log.grid_cols * 4]
        images_lib.save_png(workdir_path / 'reals.png',
                            images_lib.make_grid(reals, min(config.log.grid_cols, len(reals))))
      if step == 0:
        write_grid(state, 0)
      while step < num_steps:
        batch = sharding.global_batch(next(data), batch_shard, batch_size)
        flags = step_cfg.regularize(step)
        if flags not in compiled_variants:  # the call blocks while it compiles: time it apart
          compiled_variants.add(flags)
          t0 = time.time()
          state, metrics = step_fn(state, batch, *flags)
          compile_sec += time.time() - t0
          tick_start += time.time() - t0
        else:
          state, metrics = step_fn(state, batch, *flags)
        tick_metrics.append(metrics)
        unchecked.append((step, metrics))
        step += 1
        at_tick = step % config.log.every_steps == 0 or step == num_steps
        stopping = stop.requested(step, at_tick)
        if at_tick or step % config.checkpoint.every_steps == 0 or step == num_steps or stopping:
          # Host sync: once per tick, and before every save (never save non-finite weights).
          good = finite_or_rollback(unchecked)
          unchecked = []
          if good is not None:
            state, step = good, int(jax.device_get(good.step))
            data.close()
            data = open_data(step)
            tick_metrics, tick_start, tick_step = [], time.time(), step
            continue
        if at_tick:
          scalars, text = tick_report(tick_metrics, time.time() - tick_start,
                                      (step - tick_step) * batch_size, step * batch_size / 1000,
                                      (num_steps - step) * batch_size / 1000)
          scalars.update({'timing/compiled_variants': len(compiled_variants),
                          'timing/compile_sec': compile_sec})
          scalars.update({f'hparams/{k}': v for k, v in hparams.items()})
          writer.write_scalars(step, scalars)
          logging.info('step %d  %s  (compiled %d variants in %.0fs)', step, text,
                       len(compiled_variants), compile_sec)
          checkpointing.commit_if_done(ckpt)
          tick_metrics, tick_start, tick_step = [], time.time(), step
        if step % config.log.image_every_steps == 0 or step == num_steps:
          write_grid(state, step)
        if step % config.checkpoint.every_steps == 0 or step == num_steps or stopping:
          save(state, step)
        if evals.due(step, num_steps) and not stopping:
          t0 = time.time()
          evals.run(state.ema_params, state.ema_buffers, step)
          tick_start += time.time() - t0  # evaluation time is not training time
        if stopping:
          saved = checkpointing.commit(ckpt)  # "saved" means committed: written and checksummed
          logging.warning('Stop requested (%s): saved a checkpoint at step %d (kimg %.2f); run the '
                          'same command again to continue.', stop.reason, saved,
                          saved * batch_size / 1000)
          break
    except Exception as e:  # pylint: disable=broad-except
      checkpointing.commit_after_error(ckpt, e)
      raise
    finally:
      data.close()
  checkpointing.finish(ckpt)
  writer.flush()
  return state
