"""The shared base of every experiment config.

Experiment files in `experiments/` start from `get_base_config()` and change only what differs;
their `:tiny` variants start from `apply_tiny`. One section per thing the config drives:

  model      G and D (gan_jax.models.build)
  data       the dataset and the input pipeline (gan_jax.data.pipeline)
  loss       the loss and its regularisers; loss.name picks the train step (gan_jax.steps)
  optim      Adam of G and D (gan_jax.optim)
  ema        G_ema's half-life
  schedule   run length, batch, progressive growing (gan_jax.schedule)
  train      the step's mechanics: rematerialisation, what a NaN does, frozen layers
  init       the weights a fresh run starts from: a trained network (transfer learning)
  encoder    an encoder run's network, losses and degradations (loss.name 'encoder')
  augment    ADA (gan_jax.augment)
  mesh, checkpoint, log, evals

Units follow NVIDIA's StyleGAN2-ADA: run lengths and EMA half-life in kimg (thousands of real images
shown to D), R1 strength as gamma. Keys that moved to these sections keep working for one release
(gan_jax.config_compat).
"""

import os
import re

import ml_collections

from gan_jax import config_compat


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Explicit checkpoint directory (an Orbax step dir or a checkpoints/ dir) to start from when the
  # workdir has none of its own. The workdir's latest checkpoint always wins.
  config.resume = ''
  # The workdir holds another experiment's checkpoints (other model, data or seed): True moves
  # them aside to checkpoints.replaced-<time> and starts fresh; False (default) refuses.
  config.start_over = False

  config.model = ml_collections.ConfigDict()
  config.model.name = 'stylegan2'
  config.model.z_dim = 512
  config.model.w_dim = 512
  config.model.mapping_layers = 8
  config.model.channel_base = 32768  # channels at resolution r: min(channel_base // r, channel_max)
  config.model.channel_max = 512
  config.model.conv_clamp = 0  # clamp activations to +-conv_clamp (0: off); NVIDIA uses 256 with fp16
  # Mixed precision: the num_bf16_res highest resolutions of G and D compute in bfloat16 (params,
  # optimizer and the RGB skip image stay float32); NVIDIA uses 4 (float16) with conv_clamp 256.
  config.model.num_bf16_res = 0
  # Backends (comma-separated) on which num_bf16_res applies; elsewhere G and D compute in float32.
  # Resolved when the step is built, by the backend it is compiled for (gan_jax.aot: 'tpu'). The
  # flagship configs say 'gpu,tpu': CPUs have no bfloat16 units and run it at half speed.
  config.model.bf16_backends = 'cpu,gpu,tpu'
  config.model.mbstd_group_size = 4  # 0: the whole minibatch (the ProGAN paper's)
  config.model.mbstd_num_channels = 1
  config.model.conditional = False  # use the dataset's labels (class count comes from the dataset)
  config.model.w_avg_beta = 0.995  # decay of G's tracked average w (truncation's centre)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist_local'
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
  # Raw files of builders that read local files ('': the builder's own default; Fashion-MNIST:
  # Debian's /usr/share/datasets/fashion-mnist; FFHQ and CelebA-HQ: TFDS's manual_dir).
  config.data.source_dir = ''
  config.data.split = 'train'
  config.data.xflip = False
  config.data.prefetch = 2  # batches kept in flight ahead of the train step
  config.data.num_workers = 1  # threads that read and decode (decoding holds the GIL: 1 is enough)
  config.data.resize_filter = 'lanczos'  # FFHQ builds: 'lanczos' or 'box' (FID depends on it)

  # The loss and its regularisers; `name` picks the train step (gan_jax/steps.py):
  #   'stylegan2'      NVIDIA's StyleGAN2(-ADA): non-saturating logistic loss, lazy R1 and path
  #                    length, style mixing, ADA; one fixed resolution.
  #   'nonsaturating'  StyleGAN as in its paper: logistic loss with R1 in every D step
  #                    (r1_interval 1); needs schedule.growing.grow.
  #   'wgan_gp'        ProGAN: WGAN-GP of weight wgan_lambda and target wgan_target, plus
  #                    wgan_drift * D(x)^2; needs schedule.growing.grow.
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'stylegan2'
  config.loss.r1_gamma = 10.0
  config.loss.r1_interval = 16  # lazy R1: every N steps (0: never)
  config.loss.pl_weight = 2.0  # path-length regularisation weight (0: off)
  config.loss.pl_interval = 4  # lazy path length: every N steps (0: never)
  config.loss.pl_decay = 0.01  # EMA rate of the path-length target pl_mean
  config.loss.pl_batch_shrink = 2  # the pl pass uses batch_size // pl_batch_shrink latents
  config.loss.style_mixing_prob = 0.9
  # StyleGAN3's blur of every image D sees (stylegan2 step): sigma fades linearly from
  # blur_init_sigma (pixels) to 0 over the first blur_fade_kimg; 0: off (NVIDIA's stylegan3: 10
  # and batch * 200 / 32 kimg).
  config.loss.blur_init_sigma = 0.0
  config.loss.blur_fade_kimg = 0.0
  config.loss.wgan_lambda = 10.0
  config.loss.wgan_target = 1.0
  config.loss.wgan_drift = 0.001

  # Adam of G and D (torch's Adam, as NVIDIA's; lazy regularisers adjust lr and betas, optim.py).
  config.optim = ml_collections.ConfigDict()
  config.optim.g_lr = 0.002
  config.optim.d_lr = 0.002
  config.optim.adam_b1 = 0.0
  config.optim.adam_b2 = 0.99
  config.optim.adam_eps = 1e-8

  # G_ema, the weights sampled and evaluated.
  config.ema = ml_collections.ConfigDict()
  config.ema.kimg = 10.0  # half-life of the G_ema weights, in kimg
  config.ema.rampup = 0.0  # >0: half-life at most this fraction of the images seen so far

  # What the loop trains at each step (gan_jax/schedule.py): run length, batch, growth.
  config.schedule = ml_collections.ConfigDict()
  config.schedule.kimg = 25000.0  # run length in thousands of real images
  config.schedule.max_steps = 0  # optional hard stop in steps (0: none)
  # Global batch, split over all devices of all processes; with growing, the batch of every
  # resolution that growing.batch_sizes does not list.
  config.schedule.batch_size = 32
  # Progressive growing (ProGAN / StyleGAN; gan_jax/progressive.py). Needed by model 'progan';
  # 'stylegan' may train with it or at a fixed resolution.
  config.schedule.growing = ml_collections.ConfigDict()
  config.schedule.growing.grow = False
  config.schedule.growing.start_resolution = 4  # first stage (the data's: no growing)
  config.schedule.growing.fade_kimg = 600.0  # new blocks fade in (alpha 0 -> 1) over this many kimg
  config.schedule.growing.stabilize_kimg = 600.0  # then train at alpha 1 for this many kimg
  # Batch per resolution, 'RES:BATCH,...' (e.g. '256:14,512:6,1024:3', the paper's); the others
  # use schedule.batch_size. Every batch must divide by the mesh's devices.
  config.schedule.growing.batch_sizes = ''
  # Reset both Adam states when a fade-in starts and when it ends (the official code's
  # reset_opt_for_new_lod).
  config.schedule.growing.reset_optimizer = True

  # The mechanics of the train step.
  config.train = ml_collections.ConfigDict()
  # Rematerialisation inside R1 and path length, whose double backward keeps the activations of
  # D's / G's forward and backward pass: 'none', or a jax.checkpoint policy applied to every block
  # ('nothing_saveable': keep block inputs only, recompute the rest; 'dots_saveable': keep conv
  # and matmul outputs too; 'dots_with_no_batch_dims_saveable'). StyleGAN2 models only.
  config.train.remat = 'none'
  # NaN/Inf in a loss or the weights: 'halt' (stop, naming the step) or 'rollback' (restore the
  # last checkpoint, draw new latents, go on; at most max_rollbacks times, then halt).
  config.train.nonfinite_action = 'halt'
  config.train.max_rollbacks = 3
  # Frozen layers (FreezeD, Mo et al. 2020; for fine-tuning, config.init): no update and no Adam
  # state (gan_jax/optim.py). StyleGAN2 models only.
  # D's first N layers from the input side, counted as NVIDIA's --freezed counts them:
  # b{R}.fromrgb, conv0, conv1, skip, then 3 per block (conv0, conv1, skip) down to b8; the 4x4
  # epilogue is never frozen. 32x32: 4 freezes b32, 7 also b16, 10 also b8 (all 10 layers).
  config.train.freeze_d = 0
  config.train.freeze_g_mapping = False  # G's mapping network (and label embedding)
  config.train.freeze_g_res = 0  # G's synthesis blocks of resolution <= this (0: none)

  # The weights a fresh run starts from (gan_jax/transfer.py). Only a run that starts fresh
  # reads them: a workdir that holds checkpoints resumes from its own (the source is not read
  # again). The run starts at step 0 with fresh optimizer states and this config's schedule;
  # G, D and G_ema come from the source, and <workdir>/init_source.json records what was loaded.
  config.init = ml_collections.ConfigDict()
  # '' (random init), or: an NVIDIA StyleGAN2-ADA network pickle (.pkl: G, G_ema, D; read
  # without running its code), one of our training workdirs (or its checkpoints/ or a
  # checkpoints/<step> directory: G, G_ema, D, ADA p), or an export (G_ema only: G starts as
  # G_ema, D starts fresh). The model config must describe the source's architecture and the
  # data its resolution; a different label count re-initialises the label embeddings.
  config.init.source = ''
  config.init.step = -1  # a workdir source's checkpoint step (-1: its latest)
  config.init.w_avg = True  # keep the source's tracked w_avg (False: start it at zero)
  config.init.ada_p = False  # start ADA's p at the source's (our workdirs; else augment.p)
  # True: a tensor of ours the source lacks, one of another shape, or one the source has and we
  # do not (other than label-dependent ones) stops the run with the list. False: they start
  # fresh or are dropped, listed in the log and in init_source.json.
  config.init.strict = True

  # An encoder into a frozen G's W+ (config.loss.name='encoder', gan_jax/encoder_step.py; G from
  # config.init.source): pSp / e4e, and pSp's image-to-image tasks through `degradations`.
  config.encoder = ml_collections.ConfigDict()
  config.encoder.channels = 32  # encoder width at the input resolution, doubled per halving
  config.encoder.max_channels = 256
  config.encoder.lr = 0.001  # Adam (0.9, 0.999), as pSp's Ranger / e4e's Adam lr order
  # Comma-separated, applied in order to the encoder's input (gan_jax/degradations.py): downK
  # (super-resolution), mask (inpainting), edges (sketch), class:A>B (translation); '': inversion.
  config.encoder.degradations = ''
  config.encoder.images = 'reals'  # what it learns to rebuild: 'reals' (the data) or 'generated'
  config.encoder.pixel_weight = 1.0  # mean squared error to the clean image
  # LPIPS-style Inception distance (gan_jax/tools/perceptual.py): about 50x slower on a CPU.
  config.encoder.perceptual_weight = 0.0
  config.encoder.w_reg_weight = 0.01  # mean squared offset of the ws from w_avg

  # Adaptive discriminator augmentation (gan_jax/augment.py), NVIDIA's StyleGAN2-ADA defaults.
  config.augment = ml_collections.ConfigDict()
  # 'none' (D sees the images as they are) or a preset: blit, geom, color, filter, noise, cutout,
  # bg, bgc (NVIDIA's default), bgcf, bgcfn, bgcfnc.
  config.augment.pipe = 'none'
  config.augment.p = 0.0  # initial augmentation probability (the fixed one when target is None)
  # ADA: move p so that E[sign(D(real))] approaches this; None keeps p fixed at augment.p.
  config.augment.target = ml_collections.FieldReference(0.6, field_type=float)
  config.augment.ada_kimg = 500.0  # p can go from 0 to 1 in this many kimg
  config.augment.interval = 4  # adjust p every N steps

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # devices on the data-parallel axis (-1: all devices)
  # FSDP: parameters and optimizer states of >= fsdp_min_size elements are split over this many
  # devices (1: replicated, pure data parallelism); the batch splits over data x fsdp devices.
  config.mesh.fsdp = 1
  config.mesh.fsdp_min_size = 2 ** 16

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 3

  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 50  # one progress line and scalar summary per tick
  config.log.image_every_steps = 500  # sample grid from G_ema (also saved as PNG in the workdir)
  config.log.grid_rows = 8
  config.log.grid_cols = 8
  config.log.grid_psi = 1.0

  # Metrics of G_ema during training (gan_jax/metrics/registry.py names: fid50k_full, kid50k_full,
  # pr50k3_full, ppl2_wend, fid2k, ...), comma-separated; '' for none. Results go to the metric
  # writer and to <workdir>/metrics.jsonl. `python -m gan_jax.evaluate` computes them afterwards.
  config.evals = ml_collections.ConfigDict()
  config.evals.metrics = ''
  config.evals.every_kimg = 0.0  # evaluate every this many kimg (0: only at the end of the run)
  config.evals.batch_size = 64  # global batch of the feature network
  config.evals.max_images = 0  # >0: cap every metric's image counts (smoke tests only)
  config.evals.inception_weights = ''  # '' : the cached `python -m gan_jax.metrics.fetch` file
  config.evals.cache_dir = ''  # real-image statistics cache ('': ~/.cache/gan_jax/stats)

  # The keys that moved to the sections above, as None placeholders (gan_jax/config_compat.py).
  config_compat.add_placeholders(config)
  return config


def apply_tiny(config: ml_collections.ConfigDict, z_dim: int = 16, kimg: float = 0.08,
               every_steps: int = 5) -> ml_collections.ConfigDict:
  """The :tiny variant every experiment shares: its code path in seconds to minutes on a CPU.

  A tiny network (z and w `z_dim`, channel_base 128, channel_max 8), batch 8, `kimg` (0.08: 10
  steps of 8), checkpoints, log lines and sample grids every `every_steps`, a 2x4 grid, the
  embedded Fashion-MNIST (32x32). An experiment's variant adds only what differs (its growth
  schedule, its lazy intervals).
  """
  config.data.name = 'fashion_mnist_local'
  config.model.z_dim = config.model.w_dim = z_dim
  config.model.channel_base = 128
  config.model.channel_max = 8
  config.schedule.batch_size = 8
  config.schedule.kimg = kimg
  config.checkpoint.every_steps = every_steps
  config.log.every_steps = every_steps
  config.log.image_every_steps = every_steps
  config.log.grid_rows, config.log.grid_cols = 2, 4
  return config


def apply_encoder_run(config: ml_collections.ConfigDict, source: str) -> ml_collections.ConfigDict:
  """An encoder run (gan_jax/encoder_step.py) into the generator `config` describes, trained at
  `source`: the CPU-sized encoder and schedule the experiments' *_encoder.py files share (pixel
  loss + W regulariser; the Inception distance is ~50x a step's cost on a CPU, so it is off)."""
  config.loss.name = 'encoder'
  config.init.source = source
  config.encoder.channels = 32
  config.encoder.max_channels = 128
  config.encoder.lr = 0.001
  config.encoder.pixel_weight = 1.0
  config.encoder.perceptual_weight = 0.0
  config.encoder.w_reg_weight = 0.01
  config.schedule.batch_size = 16
  config.schedule.kimg = 16.0  # 1000 steps
  config.checkpoint.every_steps = 250
  config.log.every_steps = 50
  config.log.image_every_steps = 250
  return config


def apply_encoder_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The :tiny variant of an encoder run: the tests' tiny generator (tests/tiny_generator.py:
  32x32x1, z and w 16, channels 16, unconditional), an 8-channel encoder, 10 steps of 8.
  init.source has no default: give the tiny generator's export or workdir."""
  data_name = config.data.name
  apply_tiny(config)
  config.data.name = data_name
  config.model.conditional = False
  config.model.channel_max = 16
  config.init.source = ''
  config.encoder.channels = 8
  config.encoder.max_channels = 16
  config.encoder.lr = 0.003
  return config


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads 'experiments/FILE.py[:VARIANT]' as --config would, then applies {'a.b': value} (as
  --config.a.b=value would: deprecated keys are migrated, `config_compat.migrate`)."""
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  # ml_collections executes the file into the module sys.modules[name] (re-using one that
  # exists): under --config's own name 'config', an experiment file that loads another one with
  # this function would have its globals replaced mid-call. A name per file keeps them apart.
  stem = re.sub(r'\W', '_', os.path.basename(spec.split(':', 1)[0]).removesuffix('.py'))
  parser = config_flags.ConfigFileFlagParser(name=f'gan_jax_experiment_{stem}', lock_config=False)
  config = parser.parse(spec)
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return migrate(config, overrides or {})


def migrate(config: ml_collections.ConfigDict, overrides=()) -> ml_collections.ConfigDict:
  """Moves the deprecated keys that are set to their new place, with a warning each
  (`config_compat.migrate`; `overrides`: the keys given on the command line)."""
  return config_compat.migrate(config, get_base_config(), overrides)
