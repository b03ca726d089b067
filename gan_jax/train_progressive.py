"""The progressive-growing loop (ProGAN; StyleGAN as in its paper): `train.train_and_evaluate`
hands over to `train` here when config.progressive.enabled.

Before every step the loop reads the schedule at the images shown so far
(`progressive.schedule(nimg / 1000, ...)` -> stage resolution, fade-in alpha, batch size), so
  * the step is compiled once per stage (stage static, alpha a traced float32); every new
    compilation is logged, with the count of stages compiled so far;
  * the input pipeline is reopened whenever the batch size changes; the batch of a step is the
    sampler's batch number nimg // batch, a pure function of (seed, nimg, batch), and the reals
    are box-filtered to the stage resolution on the host;
  * both Adam states are reset when a fade-in starts and when it ends
    (config.progressive.reset_optimizer, the official reset_opt_for_new_lod).

Checkpoints: the Orbax state as in the StyleGAN2 loop, and in the checkpoint's meta the images
shown (`nimg`), with the stage, alpha and batch of the last step done. A resumed run reads nimg
back, so it recomputes the same (stage, alpha, batch) and continues exactly (tested bit for bit,
mid-fade). Progress lines and the metric writer show stage, alpha and batch.
"""

import time
from typing import Optional

from absl import logging
import jax
import numpy as np

from gan_jax import checkpointing
from gan_jax import config_check
from gan_jax import guard
from gan_jax import images as images_lib
from gan_jax import models
from gan_jax import preemption
from gan_jax import progressive
from gan_jax import progressive_step
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train as train_lib
from gan_jax import workdir as workdir_lib
from gan_jax.data import pipeline
from gan_jax.models import layers
from clu import metric_writers


class Schedule:
  """nimg (images shown) -> (stage, alpha, batch) for config.progressive and a target resolution."""

  def __init__(self, progressive_config, target_resolution: int):
    p = progressive_config
    self.target = target_resolution
    self._kwargs = dict(target_resolution=target_resolution, start_resolution=p.start_resolution,
                        fade_kimg=p.fade_kimg, stabilize_kimg=p.stabilize_kimg,
                        batch_sizes=progressive.parse_batch_sizes(p.batch_sizes),
                        default_batch_size=p.default_batch_size)

  def __call__(self, nimg: int) -> tuple[int, float, int]:
    return progressive.schedule(nimg / 1000, **self._kwargs)

  def replay(self, num_steps: int) -> int:
    """Images shown after `num_steps` steps from the start (for checkpoints without nimg)."""
    nimg = 0
    for _ in range(num_steps):
      nimg += self(nimg)[2]
    return nimg


def phase_of(stage: int, alpha: float) -> tuple[int, bool]:
  """What the optimizer reset watches: the stage, and whether its fade-in is over."""
  return int(stage), bool(alpha >= 1.0)


def make_sample_fn(G, target_resolution: int, mesh):
  """jit(params, buffers, z, c, psi, alpha, stage) -> images at the stage, nearest-upsampled to
  the target resolution (the same grid size all run long); G_ema with constant noise."""
  is_style = models.family_of(G).w_space
  rep = sharding.replicated(mesh)

  def sample(params, buffers, z, c, psi, alpha, stage):
    if is_style:
      images = G.apply({'params': params, 'buffers': buffers}, z, c, truncation_psi=psi,
                       noise_mode='const', stage=stage, alpha=alpha)
    else:  # ProGAN has no truncation
      images = G.apply({'params': params}, z, c, stage=stage, alpha=alpha)
    return layers.upsample_nearest(images, target_resolution // stage)

  jitted = jax.jit(sample, static_argnums=(6,), out_shardings=rep)
  return lambda params, buffers, z, c, psi, alpha, stage: jitted(
      params, buffers, *jax.device_put((z, c, psi, alpha), rep), stage)


def train(config, workdir: str, workdir_path, mesh, info: pipeline.DataInfo, is_main: bool,
          interrupted=()):
  """Runs the progressive schedule to config.train.kimg (or train.max_steps); returns the state.
  `interrupted`: the half-written saves workdir.report_incomplete found."""
  config_check.validate_progressive_resolution(config, info.resolution)
  G, D, c_dim = train_lib.build(config, info)
  schedule = Schedule(config.progressive, info.resolution)
  g_tx, d_tx = progressive_step.make_optimizers(config.train)
  rep, batch_shard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  abstract = state_lib.abstract(G, D, g_tx, d_tx, c_dim)
  state_shard = sharding.state_sharding(mesh, abstract, config.mesh.fsdp_min_size)
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shard)
  step_cfg = progressive_step.ProgressiveStepConfig.from_config(config.train, c_dim)
  step_fn = progressive_step.jit_progressive_step(
      progressive_step.make_progressive_step(G, D, g_tx, d_tx, step_cfg, batch_shard),
      state_shard, batch_shard, rep)
  reset_fn = progressive_step.reset_optimizers(g_tx, d_tx, state_shard)
  init_fn = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k),
                    out_shardings=state_shard)

  ckpt = checkpointing.manager(workdir, config.checkpoint)
  state, meta, source = checkpointing.restore_or_init(
      ckpt, abstract, lambda: init_fn(jax.random.PRNGKey(config.seed)), config.resume,
      interrupted)
  workdir_lib.record_start(workdir_path, config, is_main)
  step = int(jax.device_get(state.step))
  nimg, last_phase = _position(meta, step, schedule)
  total_nimg = int(round(config.train.kimg * 1000))
  max_steps = config.train.max_steps
  stage_list = progressive.stages(info.resolution, config.progressive.start_resolution)
  stage, alpha, batch_size = schedule(nimg)
  logging.info('Progressive growing %s, resolutions %s; start from %s (step %d, kimg %.3f, '
               'stage %dx%d, alpha %.4f, batch %d). G %d params, D %d params, %d devices.',
               config.model.name, '->'.join(map(str, stage_list)), source, step, nimg / 1000,
               stage, stage, alpha, batch_size, state_lib.param_count(state.g_params),
               state_lib.param_count(state.d_params), mesh.size)

  sample = make_sample_fn(G, info.resolution, mesh)
  grid_z, grid_c = train_lib.grid_latents(config, G, c_dim)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                asynchronous=False)

  def write_grid(state, step, stage, alpha):
    images = images_lib.to_uint8(sample(state.ema_params, state.ema_buffers, grid_z, grid_c,
                                        np.float32(config.log.grid_psi), np.float32(alpha),
                                        stage))
    grid = images_lib.make_grid(images, config.log.grid_cols)
    if is_main:
      writer.write_images(step, {'samples': grid[None]})
      images_lib.save_png(workdir_path / f'samples_{step:07d}.png', grid)

  def save(state, step, nimg, stage, alpha, batch):
    checkpointing.save(ckpt, state, {'step': step, 'kimg': nimg / 1000, 'nimg': nimg,
                                     'stage': stage, 'alpha': alpha, 'batch': batch})

  def open_data(nimg, batch):
    return pipeline.InputPipeline(config.data, batch, config.seed, jax.process_index(),
                                  jax.process_count(), start_step=nimg // batch)

  def done(step, nimg):
    return nimg >= total_nimg or (max_steps > 0 and step >= max_steps)

  data = None
  compiled = {}  # stage -> seconds its compile took
  rollbacks = 0
  tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
  unchecked = []
  with preemption.StopRequest() as stop:
    try:
      if is_main and not (workdir_path / 'reals.png').exists():
        with pipeline.InputPipeline(config.data, batch_size, config.seed) as first:
          reals = images_lib.to_uint8(first.batch_at(0)['image'])[:config.log.grid_cols * 4]
        images_lib.save_png(workdir_path / 'reals.png',
                            images_lib.make_grid(reals, min(config.log.grid_cols, len(reals))))
      if step == 0:
        write_grid(state, 0, stage, alpha)
      while not done(step, nimg):
        stage, alpha, batch_size = schedule(nimg)
        if data is None or data.local_batch_size * jax.process_count() != batch_size:
          if data is not None:
            data.close()
          data = open_data(nimg, batch_size)
        phase = phase_of(stage, alpha)
        if config.progressive.reset_optimizer and last_phase not in (None, phase):
          t0 = time.time()
          state = reset_fn(state)
          tick_start += time.time() - t0  # compiles once: not training time
          logging.info('Step %d: stage %dx%d alpha %.4f: %s; Adam states reset.', step, stage,
                       stage, alpha, 'fade-in starts' if not phase[1] else 'fade-in done')
        local = next(data)
        local['image'] = progressive_step.box_downsample(local['image'], stage)
        batch = sharding.global_batch(local, batch_shard, batch_size)
        args = (state, batch, np.float32(alpha), np.int32(nimg), stage)
        if stage not in compiled:  # the call blocks while it compiles: time it apart
          logging.info('Compiling the train step for stage %dx%d (batch %d): compilation %d of '
                       'at most %d for this schedule.', stage, stage, batch_size,
                       len(compiled) + 1, len(stage_list))
          t0 = time.time()
          state, metrics = step_fn(*args)
          compiled[stage] = time.time() - t0
          tick_start += compiled[stage]
          logging.info('Compiled stage %dx%d in %.1fs; %d stage(s) compiled so far.', stage, stage,
                       compiled[stage], len(compiled))
        else:
          state, metrics = step_fn(*args)
        nimg += batch_size
        step += 1
        last_phase = phase
        tick_metrics.append(metrics)
        unchecked.append((step - 1, metrics))
        finished = done(step, nimg)
        at_tick = step % config.log.every_steps == 0 or finished
        stopping = stop.requested(step, at_tick)
        due_save = step % config.checkpoint.every_steps == 0 or finished or stopping
        if at_tick or due_save:
          try:  # host sync: once per tick and before every save
            guard.check_finite(unchecked)
            unchecked = []
          except guard.NonFiniteError as error:
            unchecked = []
            rollbacks += 1
            state, meta = guard.rollback(error, ckpt, abstract, config.train, rollbacks)
            step = int(jax.device_get(state.step))
            nimg, last_phase = _position(meta, step, schedule)
            data.close()
            data = None
            tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
            continue
        if at_tick:
          _log_tick(writer, tick_metrics, time.time() - tick_start, step, nimg, nimg - tick_nimg,
                    total_nimg, (stage, alpha, batch_size), compiled)
          checkpointing.commit_if_done(ckpt)
          tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
        if step % config.log.image_every_steps == 0 or finished:
          t0 = time.time()
          write_grid(state, step, stage, alpha)
          tick_start += time.time() - t0  # compiles once per stage: not training time
        if due_save:
          save(state, step, nimg, stage, alpha, batch_size)
        if stopping:
          checkpointing.commit(ckpt)  # "saved" means committed: written and checksummed
          logging.warning('Stop requested (%s): saved a checkpoint at step %d (kimg %.3f, stage '
                          '%dx%d, alpha %.4f); run the same command again to continue.',
                          stop.reason, step, nimg / 1000, stage, stage, alpha)
          break
    except Exception as e:  # pylint: disable=broad-except
      checkpointing.commit_after_error(ckpt, e)
      raise
    finally:
      if data is not None:
        data.close()
  logging.info('Progressive run at step %d, kimg %.3f: compiled the train step %d times (stages '
               '%s; %.0fs in all).', step, nimg / 1000, len(compiled),
               ', '.join(f'{s}x{s}' for s in sorted(compiled)), sum(compiled.values()))
  checkpointing.finish(ckpt)
  writer.flush()
  return state


def _log_tick(writer, tick_metrics, elapsed: float, step: int, nimg: int, shown: int,
              total_nimg: int, where: tuple[int, float, int], compiled: dict) -> None:
  """One progress line and the tick's scalars (train.tick_report's, then stage, alpha, batch)."""
  stage, alpha, batch = where
  scalars, text = train_lib.tick_report(tick_metrics, elapsed, shown, nimg / 1000,
                                        max(total_nimg - nimg, 0) / 1000)
  scalars.update({'progress/stage': stage, 'progress/alpha': alpha, 'progress/batch': batch,
                  'timing/compiled_stages': len(compiled),
                  'timing/compile_sec': sum(compiled.values())})
  writer.write_scalars(step, scalars)
  logging.info('step %d  %s  stage %dx%d  alpha %.3f  batch %d  (compiled %d stages in %.0fs)',
               step, text, stage, stage, alpha, batch, len(compiled), sum(compiled.values()))


def _position(meta: dict, step: int, schedule: Schedule) -> tuple[int, Optional[tuple]]:
  """(images shown, phase of the last step done) at a restored `step` (None: nothing done)."""
  if step == 0:
    return 0, None
  if 'nimg' in meta:
    return int(meta['nimg']), phase_of(meta['stage'], meta['alpha'])
  nimg = schedule.replay(step)  # a checkpoint without progressive meta (e.g. config.resume)
  prev = schedule.replay(step - 1)
  logging.warning('The checkpoint of step %d holds no image count: replayed the schedule, '
                  '%d images.', step, nimg)
  return nimg, phase_of(*schedule(prev)[:2])
