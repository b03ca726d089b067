"""train_and_evaluate(config, workdir): the one training loop of every model family.

Each step the loop asks the schedule (`gan_jax.schedule`) for the stage at the images shown so far
(resolution, fade-in alpha, batch size; fixed-resolution training is the one stage) and the step
(`gan_jax.steps`, chosen by config.loss.name) for the step's static variant (which lazy
regularisers are due), and runs the step compiled for (resolution, variant): every new compilation
is logged and timed apart from training. The input pipeline is reopened when the batch size
changes (the batch of a step is the sampler's batch nimg // batch, a pure function of the seed, so
a resumed run reads the same images) and the reals are box-filtered to the stage resolution on
the host. With config.schedule.growing.reset_optimizer both optimizer states are reset when a fade-in
starts and when it ends (ProGAN's reset_opt_for_new_lod).

A fresh run with config.init.source starts from a trained network's weights (`gan_jax.transfer`:
step 0, fresh optimizer states); a run that resumes never reads the source again.

Checkpoints carry the Orbax state and, in their meta, the images shown (nimg) with the stage,
alpha and batch of the last step; a resumed run recomputes the same position and continues
exactly (tested bit for bit, mid-fade and after SIGKILL). Non-finite values are checked once per
tick and before every save (`gan_jax.guard`); a stop request (SIGINT / SIGTERM, preemption) saves
and commits before it exits.
"""

from absl import logging
import os
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from clu import metric_writers
from etils import epath

from gan_jax import checkpointing
from gan_jax import config_check
from gan_jax import config_base
from gan_jax import guard
from gan_jax import images as images_lib
from gan_jax import models
from gan_jax import optim
from gan_jax import preemption
from gan_jax import progress
from gan_jax import schedule as schedule_lib
from gan_jax import sharding
from gan_jax import samples
from gan_jax import state as state_lib
from gan_jax import step_common
from gan_jax import steps
from gan_jax import transfer
from gan_jax import workdir as workdir_lib
from gan_jax.data import pipeline
from gan_jax.models import encoder as encoder_model
from gan_jax.metrics import periodic


total_steps = schedule_lib.fixed_num_steps  # steps of a fixed-resolution run


def build(config, info: pipeline.DataInfo, backend: Optional[str] = None):
  """(G, D, c_dim) for the config and the dataset it trains on, compiled for `backend` (default:
  JAX's default backend; it decides whether model.num_bf16_res applies)."""
  c_dim = info.num_classes if config.model.conditional else 0
  G, D = models.build(config.model, info.resolution, info.channels, c_dim, backend)
  if config.loss.name == 'encoder':  # an encoder run: the encoder takes D's slot (encoder_step)
    D = encoder_model.build(config.encoder, G)
  return G, D, c_dim


class ShardedStep(NamedTuple):
  """The train step exactly as the loop runs it; `gan_jax.aot` compiles `fn` for a TPU slice."""
  abstract: Any  # the state's ShapeDtypeStructs, with their shardings
  state_sharding: Any
  batch_sharding: jax.sharding.NamedSharding
  step: step_common.Step
  fn: Callable[..., tuple[Any, dict]]  # jit of step.fn with the shardings


def sharded_step(config, mesh, G, D, c_dim: int) -> ShardedStep:
  """The registry's step for `config` (gan_jax.steps), jitted with the state and batch shardings
  of `mesh` (config.mesh.fsdp_min_size decides which leaves FSDP splits)."""
  rep, batch_shard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  step = steps.make(config, G, D, c_dim, batch_shard)
  abstract = state_lib.abstract(G, D, step.g_tx, step.d_tx, c_dim)
  state_shard = sharding.state_sharding(mesh, abstract, config.mesh.fsdp_min_size)
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shard)
  fn = step_common.jit_step(step.fn, state_shard, batch_shard, rep)
  return ShardedStep(abstract, state_shard, batch_shard, step, fn)


def train_and_evaluate(config, workdir: str, devices: Optional[Sequence[jax.Device]] = None):
  """Trains (resuming from the workdir when it holds checkpoints); returns the final state."""
  config_base.migrate(config)  # deprecated keys set after loading (a no-op once migrated)
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
    info = _dataset_info(config)
    workdir_lib.check_compatible(workdir_path, config, config.start_over)
    interrupted = workdir_lib.report_incomplete(workdir_path)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('gan_jax: dataset and workdir ready')
  if not is_main:
    info = _dataset_info(config)
  G, D, c_dim = build(config, info)
  schedule = schedule_lib.Schedule(config, info.resolution)
  abstract, state_shard, batch_shard, step_def, step_fn = sharded_step(config, mesh, G, D, c_dim)
  init_fn = jax.jit(lambda k: state_lib.create(G, D, step_def.g_tx, step_def.d_tx, c_dim, k,
                                               config.augment.p), out_shardings=state_shard)
  reset_fn = step_common.reset_optimizers(step_def.g_tx, step_def.d_tx, state_shard)

  ckpt = checkpointing.manager(workdir, config.checkpoint)
  def fresh_state():  # only when nothing is restored: a resumed run never reads init.source
    state = init_fn(jax.random.PRNGKey(config.seed))
    if config.init.source:
      state = transfer.start_state(config, state, workdir_path, is_main)
    return state
  state, meta, source = checkpointing.restore_or_init(ckpt, abstract, fresh_state, config.resume,
                                                      interrupted)
  if config.init.source:
    logging.info('config.init.source=%r: %s', config.init.source,
                 'loaded into the fresh state' if source == 'fresh init' else
                 f'not read (the run continues from its {source})')
  workdir_lib.record_start(workdir_path, config, is_main)
  step = int(jax.device_get(state.step))
  nimg, last_phase = schedule.position(meta, step)
  stage = schedule.at(nimg)
  logging.info('Start from %s (step %d, kimg %.3f, %dx%d, alpha %.4f, batch %d); train step %r, '
               'resolutions %s. G %d params, D %d params, %d devices.', source, step, nimg / 1000,
               stage.resolution, stage.resolution, stage.alpha, stage.batch_size, step_def.name,
               '->'.join(map(str, schedule.resolutions)), state_lib.param_count(state.g_params),
               state_lib.param_count(state.d_params), mesh.size)
  if config.model.name == 'stylegan2':
    g_frozen, d_frozen = optim.frozen_counts(config, state.g_params, state.d_params)
    if g_frozen or d_frozen:
      logging.info('Frozen (config.train.freeze_*): G %d params, D %d params.', g_frozen, d_frozen)

  sample = samples.make_sample_fn(G, info.resolution, mesh)
  grid_z, grid_c = samples.grid_latents(config, G, c_dim)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                asynchronous=False)
  hparams = optim.effective_hparams(config, lazy_d=step_def.name == 'stylegan2')
  evals = periodic.PeriodicEvals(config, workdir, mesh, G, writer, is_main)  # config.evals

  grid_reals = []  # step 0's reals, for a step's preview (an encoder run's reconstructions)

  def write_grid(state, step, stage):
    if step_def.preview is not None:
      images, cols = step_def.preview(state, grid_reals[0])
    else:
      images = sample(state.ema_params, state.ema_buffers, grid_z, grid_c, config.log.grid_psi,
                      stage.alpha, stage.resolution)
      cols = config.log.grid_cols
    grid = images_lib.make_grid(images_lib.to_uint8(images), cols)
    if is_main:
      writer.write_images(step, {'samples': grid[None]})
      images_lib.save_png(workdir_path / f'samples_{step:07d}.png', grid)

  def open_data(nimg, batch):
    return pipeline.InputPipeline(config.data, batch, config.seed, jax.process_index(),
                                  jax.process_count(), start_step=nimg // batch)

  rollbacks = 0
  data = open_data(nimg, stage.batch_size)
  compiled = {}  # (resolution, variant) -> seconds its compilation took
  tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
  unchecked = []  # (step, metrics) not yet checked for non-finite values
  with preemption.StopRequest() as stop:
    try:
      # Every process takes part in gathering the global batch of step 0 (at the batch size of
      # the current stage); process 0 writes it once.
      reals = sharding.to_host(sharding.global_batch(data.batch_at(0), batch_shard,
                                                     stage.batch_size))['image']
      grid_reals.append(reals)
      if is_main and not (workdir_path / 'reals.png').exists():
        reals = images_lib.to_uint8(reals)[:config.log.grid_cols * 4]
        images_lib.save_png(workdir_path / 'reals.png',
                            images_lib.make_grid(reals, min(config.log.grid_cols, len(reals))))
      if step == 0:
        write_grid(state, 0, stage)
      while not schedule.done(step, nimg):
        stage = schedule.at(nimg)
        if data.local_batch_size * jax.process_count() != stage.batch_size:
          data.close()
          data = open_data(nimg, stage.batch_size)
        phase = schedule.phase(stage)
        if schedule.reset_optimizer and last_phase not in (None, phase):
          t0 = time.time()
          state = reset_fn(state)
          tick_start += time.time() - t0  # compiles once: not training time
          logging.info('Step %d: %dx%d alpha %.4f: %s; optimizer states reset.', step,
                       stage.resolution, stage.resolution, stage.alpha,
                       'fade-in done' if phase[1] else 'fade-in starts')
        local = next(data)
        local['image'] = images_lib.box_downsample(local['image'], stage.resolution)
        batch = sharding.global_batch(local, batch_shard, stage.batch_size)
        variant = step_def.variant(step)
        args = (state, batch, np.float32(stage.alpha), np.int32(nimg), stage.resolution, variant)
        key = (stage.resolution, variant)
        if key not in compiled:  # the call blocks while it compiles: time it apart
          t0 = time.time()
          state, metrics = step_fn(*args)
          compiled[key] = time.time() - t0
          tick_start += compiled[key]
          logging.info('Compiled the step for %dx%d, batch %d, variant %s in %.1fs (%d compiled).',
                       stage.resolution, stage.resolution, stage.batch_size,
                       step_def.variant_names(variant), compiled[key], len(compiled))
        else:
          state, metrics = step_fn(*args)
        nimg += stage.batch_size
        step += 1
        last_phase = phase
        tick_metrics.append(metrics)
        unchecked.append((step - 1, metrics))
        finished = schedule.done(step, nimg)
        at_tick = step % config.log.every_steps == 0 or finished
        stopping = stop.requested(step, at_tick)
        due_save = step % config.checkpoint.every_steps == 0 or finished or stopping
        if at_tick or due_save:
          # Host sync: once per tick, and before every save (never save non-finite weights).
          try:
            guard.check_finite(unchecked)
            unchecked = []
          except guard.NonFiniteError as error:
            unchecked = []
            rollbacks += 1
            state, meta = guard.rollback(error, ckpt, abstract, config.train, rollbacks)
            step = int(jax.device_get(state.step))
            nimg, last_phase = schedule.position(meta, step)
            data.close()
            data = open_data(nimg, schedule.at(nimg).batch_size)
            tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
            continue
        if at_tick:
          _log_tick(writer, tick_metrics, time.time() - tick_start, step, nimg, tick_nimg,
                    schedule, stage, compiled, hparams)
          checkpointing.commit_if_done(ckpt)
          tick_metrics, tick_start, tick_nimg = [], time.time(), nimg
        if step % config.log.image_every_steps == 0 or finished:
          t0 = time.time()
          write_grid(state, step, stage)
          tick_start += time.time() - t0  # compiles once per stage: not training time
        if due_save:
          # A growing run's meta also says where it is in the schedule (tools read it).
          growth = (dict(stage=stage.resolution, alpha=stage.alpha, batch=stage.batch_size)
                    if schedule.growing else {})
          checkpointing.save(ckpt, state, {'step': step, 'kimg': nimg / 1000, 'nimg': nimg,
                                           **growth})
        if evals.due(nimg, stage.batch_size, finished) and not stopping:
          t0 = time.time()
          growth = (dict(stage=stage.resolution, alpha=stage.alpha) if schedule.growing else {})
          evals.run(state.ema_params, state.ema_buffers, step, nimg=nimg, **growth)
          tick_start += time.time() - t0  # evaluation time is not training time
        if stopping:
          saved = checkpointing.commit(ckpt)  # "saved" means committed: written and checksummed
          logging.warning('Stop requested (%s): saved a checkpoint at step %d (kimg %.3f, '
                          '%dx%d, alpha %.4f); run the same command again to continue.',
                          stop.reason, saved, nimg / 1000, stage.resolution, stage.resolution,
                          stage.alpha)
          break
    except Exception as e:  # pylint: disable=broad-except
      checkpointing.commit_after_error(ckpt, e)
      raise
    finally:
      data.close()
  logging.info('Run at step %d, kimg %.3f: compiled the step %d times (%.0fs in all).', step,
               nimg / 1000, len(compiled), sum(compiled.values()))
  checkpointing.finish(ckpt)
  writer.flush()
  return state


def _dataset_info(config) -> pipeline.DataInfo:
  info = pipeline.dataset_info(config.data)
  config_check.validate_resolution(info.resolution)
  if config.schedule.growing.grow:
    config_check.validate_progressive_resolution(config, info.resolution)
  return info


def _log_tick(writer, tick_metrics, elapsed: float, step: int, nimg: int, tick_nimg: int,
              schedule: schedule_lib.Schedule, stage: schedule_lib.Stage, compiled: dict,
              hparams: dict) -> None:
  """One progress line and the tick's scalars (progress.tick_report's, then the stage)."""
  scalars, text = progress.tick_report(tick_metrics, elapsed, nimg - tick_nimg, nimg / 1000,
                                       max(schedule.total_nimg - nimg, 0) / 1000)
  scalars.update({'progress/resolution': stage.resolution, 'progress/alpha': stage.alpha,
                  'progress/batch': stage.batch_size, 'timing/compiled_variants': len(compiled),
                  'timing/compile_sec': sum(compiled.values())})
  scalars.update({f'hparams/{k}': v for k, v in hparams.items()})
  writer.write_scalars(step, scalars)
  where = (f'  {stage.resolution}x{stage.resolution}  alpha {stage.alpha:.3f}  batch '
           f'{stage.batch_size}' if schedule.growing else '')
  logging.info('step %d  %s%s  (compiled %d variants in %.0fs)', step, text, where,
               len(compiled), sum(compiled.values()))
