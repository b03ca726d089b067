"""The shared base of every experiment config.

Experiment files in `experiments/` start from `get_base_config()` and change only what differs.
Units follow NVIDIA's StyleGAN2-ADA: run lengths and EMA half-life in kimg (thousands of real images
shown to D), R1 strength as gamma.
"""

import ml_collections


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

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist_local'
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
  config.data.source_dir = '/usr/share/datasets/fashion-mnist'  # raw files for local builders
  config.data.split = 'train'
  config.data.xflip = False
  config.data.prefetch = 2  # batches kept in flight ahead of the train step
  config.data.num_workers = 1  # threads that read and decode (decoding holds the GIL: 1 is enough)
  config.data.resize_filter = 'lanczos'  # FFHQ builds: 'lanczos' or 'box' (FID depends on it)

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32  # global batch, split over all devices of all processes
  config.train.kimg = 25000.0  # run length in thousands of real images
  config.train.max_steps = 0  # optional hard stop in steps (0: none)
  config.train.g_lr = 0.002
  config.train.d_lr = 0.002
  config.train.adam_b1 = 0.0
  config.train.adam_b2 = 0.99
  config.train.adam_eps = 1e-8
  config.train.r1_gamma = 10.0
  config.train.r1_interval = 16  # lazy R1: every N steps (0: never)
  config.train.pl_weight = 2.0  # path-length regularisation weight (0: off)
  config.train.pl_interval = 4  # lazy path length: every N steps (0: never)
  config.train.pl_decay = 0.01  # EMA rate of the path-length target pl_mean
  config.train.pl_batch_shrink = 2  # the pl pass uses batch_size // pl_batch_shrink latents
  config.train.style_mixing_prob = 0.9
  config.train.ema_kimg = 10.0  # half-life of the G_ema weights, in kimg
  config.train.ema_rampup = 0.0  # >0: half-life at most this fraction of the images seen so far
  config.train.w_avg_beta = 0.995  # decay of the tracked average w used for truncation
  # Rematerialisation inside R1 and path length, whose double backward keeps the activations of
  # D's / G's forward and backward pass: 'none', or a jax.checkpoint policy applied to every block
  # ('nothing_saveable': keep block inputs only, recompute the rest; 'dots_saveable': keep conv
  # and matmul outputs too; 'dots_with_no_batch_dims_saveable'). StyleGAN2 models only.
  config.train.remat = 'none'
  # NaN/Inf in a loss or the weights: 'halt' (stop, naming the step) or 'rollback' (restore the
  # last checkpoint, draw new latents, go on; at most max_rollbacks times, then halt).
  config.train.nonfinite_action = 'halt'
  config.train.max_rollbacks = 3
  # Loss of the progressive loop (gan_jax/train_progressive.py; the StyleGAN2 loop always uses
  # 'nonsaturating'): 'nonsaturating' (logistic, + R1 of weight r1_gamma in every D step, as
  # StyleGAN) or 'wgan_gp' (ProGAN: WGAN-GP of weight wgan_lambda and target wgan_target, plus
  # wgan_drift * D(x)^2).
  config.train.loss = 'nonsaturating'
  config.train.wgan_lambda = 10.0
  config.train.wgan_target = 1.0
  config.train.wgan_drift = 0.001

  # Progressive growing (ProGAN / StyleGAN; gan_jax/progressive.py, gan_jax/train_progressive.py).
  # Needed by model 'progan'; 'stylegan' may train with it or at a fixed resolution.
  config.progressive = ml_collections.ConfigDict()
  config.progressive.enabled = False
  config.progressive.start_resolution = 4  # = the data's resolution: fixed-resolution training
  config.progressive.fade_kimg = 600.0  # new blocks fade in (alpha 0 -> 1) over this many kimg
  config.progressive.stabilize_kimg = 600.0  # then train at alpha 1 for this many kimg
  # Batch per resolution, 'RES:BATCH,...' (e.g. '256:14,512:6,1024:3', the paper's); the others
  # use default_batch_size. Every batch must divide by the mesh's devices. train.batch_size is
  # not used by the progressive loop.
  config.progressive.batch_sizes = ''
  config.progressive.default_batch_size = 16
  # Reset both Adam states when a fade-in starts and when it ends (the official code's
  # reset_opt_for_new_lod).
  config.progressive.reset_optimizer = True

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
  return config


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads 'experiments/FILE.py[:VARIANT]' as --config would, then applies {'a.b': value}."""
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.ConfigFileFlagParser(name='config', lock_config=False).parse(spec)
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
