"""StyleGAN3 (alias-free) generator with StyleGAN2's residual discriminator, NVIDIA's recipe.

  python -m gan_jax.main --config experiments/ffhq_stylegan3.py --workdir runs/sg3t    # T, 1024
  python -m gan_jax.main --config experiments/ffhq_stylegan3.py:r --workdir runs/sg3r  # R, 1024
  python -m gan_jax.main --config experiments/ffhq_stylegan3.py:256 --workdir runs/sg3t256
  python -m gan_jax.main --config experiments/ffhq_stylegan3.py:fmnist --workdir runs/sg3fm
  python -m gan_jax.evaluate --workdir runs/sg3t --metrics fid50k_full,eqt50k_int,eqr50k
  python bench/train_step.py --config experiments/ffhq_stylegan3.py:bench32 --steps 5

NVIDIA's train.py for --cfg=stylegan3-t / stylegan3-r, as its docs/configs.md runs FFHQ:
mapping depth 2 (lr multiplier 0.01), G lr 0.0025, D lr 0.002, Adam (0, 0.99, 1e-8), batch 32,
G_ema half-life batch * 10 / 32 kimg with ramp-up 0.05, R1 only (gamma 32.8 at 1024, lazy every
16 steps; no path length, no style mixing), magnitude EMA beta 0.5 ** (batch / 20000), x-flips,
no augmentation, mixed precision in the 4 highest resolutions with clamp 256 (bfloat16 on
accelerators here). Config R: 1x1 convolutions, radial filters, G's channel_base / channel_max
doubled (D's not), and the blur of D's inputs (sigma 10 fading out over batch * 200 / 32 kimg);
NVIDIA's T has no blur. ADA works with it (`--config.augment.pipe=bgc`).

Variants: '' (T, 1024), 'r' (R, 1024), '256' and 'r256' (NVIDIA's FFHQ-U 256 ablation
settings: batch 64, gamma 1, channel_base 16384, D lr 0.0025), 'tiny' (seconds on a CPU: every
code path, the blur included), 'fmnist' (T on the embedded Fashion-MNIST, sized for 2 CPU
cores), 'bench32' (the speed-target network of bench/README.md, timed on random images).
"""

import ml_collections

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'ffhq/1024'
  config.data.xflip = True
  config.model.name = 'stylegan3'
  config.model.mapping_layers = 2  # NVIDIA's train.py default for stylegan3
  config.model.w_avg_beta = 0.998  # NVIDIA's StyleGAN3 MappingNetwork
  config.model.conv_kernel = 3  # config T (config R: 1, with use_radial_filters and the
  config.model.use_radial_filters = False  # channel_base / channel_max doubled)
  config.model.channel_base = 32768
  config.model.channel_max = 512
  config.model.g_channel_base = None  # None: channel_base (G and D); R doubles G's only
  config.model.g_channel_max = None
  config.model.conv_clamp = 256
  config.model.num_bf16_res = 4
  config.model.bf16_backends = 'gpu,tpu'
  config.schedule.kimg = 25000.0
  config.optim.g_lr = 0.0025
  config.optim.d_lr = 0.002
  config.loss.r1_gamma = 32.8
  config.loss.r1_interval = 16
  config.loss.pl_weight = 0.0
  config.loss.style_mixing_prob = 0.0
  config.ema.rampup = 0.05
  config.checkpoint.every_steps = 2000
  config.log.every_steps = 125  # 4 kimg ticks, as NVIDIA's
  config.log.image_every_steps = 1250
  config.log.grid_rows, config.log.grid_cols = 4, 8
  set_batch(config, 32)
  if variant in ('r', 'r256'):
    apply_r(config)
  if variant in ('256', 'r256'):
    apply_256(config)
  elif variant == 'tiny':
    apply_tiny(config)
  elif variant == 'fmnist':
    apply_fmnist(config)
  elif variant == 'bench32':
    apply_bench32(config)
  elif variant not in ('', 'r'):
    raise ValueError(f'Unknown variant {variant!r} of ffhq_stylegan3.py (known: r, 256, r256, '
                     'tiny, fmnist, bench32).')
  return config


def set_batch(config, batch: int):
  """The batch and what NVIDIA's train.py derives from it: the G_ema half-life, the magnitude
  EMA beta and (when blurring) the blur's fade-out."""
  config.schedule.batch_size = batch
  config.ema.kimg = batch * 10 / 32
  config.model.magnitude_ema_beta = 0.5 ** (batch / 20e3)
  if config.loss.blur_init_sigma > 0:
    config.loss.blur_fade_kimg = batch * 200 / 32


def apply_r(config):
  """Config R: 1x1 convolutions, radial filters, G's channels doubled, D's inputs blurred."""
  config.model.conv_kernel = 1
  config.model.use_radial_filters = True
  config.model.g_channel_base = config.model.channel_base * 2
  config.model.g_channel_max = config.model.channel_max * 2
  config.loss.blur_init_sigma = 10.0
  set_batch(config, config.schedule.batch_size)
  return config


def apply_256(config):
  """NVIDIA's FFHQ-U 256 ablation settings (docs/configs.md): batch 64, gamma 1, channel_base
  16384, D lr 0.0025."""
  config.data.name = 'ffhq/256'
  config.model.channel_base = 16384
  if config.model.g_channel_base is not None:
    config.model.g_channel_base = 2 * 16384
  config.optim.d_lr = 0.0025
  config.loss.r1_gamma = 1.0
  set_batch(config, 64)
  return config


def apply_tiny(config):
  """Seconds on a CPU: the shared tiny sizes at 16x16, R1 every other step and the blur fading
  over the first 64 images, so a few steps run every code path."""
  config_base.apply_tiny(config)
  config.model.magnitude_ema_beta = 0.5 ** (config.schedule.batch_size / 20e3)
  config.model.conv_clamp = 0
  config.model.num_bf16_res = 0
  config.loss.r1_interval = 2
  config.loss.blur_init_sigma = 2.0
  config.loss.blur_fade_kimg = 0.064
  return config


def apply_fmnist(config):
  """Config T on the embedded Fashion-MNIST (32x32 grayscale), sized for 2 CPU cores: z/w 64,
  channel_base 1024 / channel_max 32 (32 channels in every layer), batch 16, G and D lr 0.0025,
  R1 gamma 1 every 4 steps, the blur (sigma 4 over the first 2 kimg) and a short EMA."""
  config.data.name = 'fashion_mnist_local'
  config.data.xflip = False
  config.model.z_dim = config.model.w_dim = 64
  config.model.channel_base = 1024
  config.model.channel_max = 32
  config.model.conv_clamp = 0
  config.model.num_bf16_res = 0
  config.optim.g_lr = config.optim.d_lr = 0.0025
  config.loss.r1_gamma = 1.0
  config.loss.r1_interval = 4
  config.loss.blur_init_sigma = 4.0
  set_batch(config, 16)
  config.loss.blur_fade_kimg = 2.0
  config.ema.kimg = 1.0
  config.schedule.kimg = 20.0
  config.checkpoint.every_steps = 250
  config.log.every_steps = 25
  config.log.image_every_steps = 125
  config.log.grid_rows, config.log.grid_cols = 4, 8
  return config


def apply_bench32(config):
  """Config T at 32x32x3: channel_base 4096 / channel_max 128 (128 channels in every layer),
  mapping 2, z/w 512, float32, no clamp, batch 8; residual D with the same channels, minibatch
  std group 4; G main + D main + D R1 (gamma 0.5) in every step; no path length, no style mixing,
  no blur. magnitude_ema_beta as NVIDIA's train.py sets it for batch 8: 0.5 ** (8 / 20000).
  """
  config.data.name = 'ffhq/256'
  config.data.xflip = False
  config.model.z_dim = config.model.w_dim = 512
  config.model.channel_base = 4096
  config.model.channel_max = 128
  config.model.mbstd_group_size = 4
  config.model.conv_clamp = 0
  config.model.num_bf16_res = 0
  config.model.bf16_backends = 'cpu,gpu,tpu'
  config.optim.g_lr = config.optim.d_lr = 0.002
  config.ema.kimg, config.ema.rampup = 10.0, 0.0
  set_batch(config, 8)
  config.ema.kimg = 10.0
  config.loss.style_mixing_prob = 0.0
  config.loss.pl_weight = 0.0
  config.loss.r1_gamma = 0.5
  config.loss.r1_interval = 1  # G main + D main + D R1 in every step
  config.bench = ml_collections.ConfigDict({'resolution': 32, 'channels': 3})
  return config
