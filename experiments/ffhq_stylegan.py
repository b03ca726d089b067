"""StyleGAN (Karras et al. 2019) on FFHQ 1024x1024, trained with progressive growing as in the
paper (its official config for 8 GPUs).

  python -m gan_jax.main --config experiments/ffhq_stylegan.py --workdir gs://bucket/sg1024
  python -m gan_jax.main --config experiments/ffhq_stylegan.py:fmnist --workdir runs/sg_fmnist
  python -m gan_jax.main --config experiments/ffhq_stylegan.py:tiny --workdir /tmp/sg_tiny
  python -m gan_jax.main --config experiments/ffhq_stylegan.py --workdir DIR \
      --config.schedule.growing.grow=False --config.loss.name=stylegan2   # fixed 1024x1024,
                                          # StyleGAN2's step (lazy R1, no path length)

Growing from 8x8 (the official lod_initial_resolution), 600 kimg fade-in and 600 kimg at alpha 1
per resolution; global minibatch 256 at 8x8, 128 at 16, 64 at 32, 32 from 64 on (the official
8-GPU minibatch_dict); 8-layer mapping network (lr x 0.01), style mixing with probability 0.9,
non-saturating logistic loss with R1 (gamma 10) in every D step, Adam lr 0.001 betas (0, 0.99),
G_ema half-life 10 kimg, 25000 kimg. Not modelled: the official per-resolution learning rates
(0.0015 at 128, 0.002 at 256, 0.003 at 512 and 1024); the lr stays 0.001. Sample with
truncation psi 0.7 on the first 8 ws (`--trunc 0.7 --trunc-cutoff 8` of gan_jax.generate).

FFHQ is not downloaded at run time (the README's FFHQ section prepares it). `:fmnist` is the
recipe at 32x32 on Fashion-MNIST for two CPU cores (15 min measured on two busy cores); `:tiny`
runs the code path in a few minutes (mostly compiling the step once per stage).
"""

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'ffhq/1024'
  config.data.xflip = True
  config.model.name = 'stylegan'
  config.model.z_dim = config.model.w_dim = 512
  config.model.mapping_layers = 8
  config.model.channel_base = 16384  # the official fmap_base 8192: 512 up to 32x32, 16 at 1024
  config.model.channel_max = 512
  config.model.conv_clamp = 0
  config.model.mbstd_group_size = 4
  config.schedule.growing.grow = True
  config.schedule.growing.start_resolution = 8
  config.schedule.growing.fade_kimg = 600.0
  config.schedule.growing.stabilize_kimg = 600.0
  config.schedule.growing.batch_sizes = '8:256,16:128,32:64'
  config.schedule.growing.reset_optimizer = True
  config.schedule.batch_size = 32  # from 64x64 on (growing.batch_sizes: the smaller ones)
  config.schedule.kimg = 25000.0
  config.loss.name = 'nonsaturating'
  config.loss.r1_gamma = 10.0
  config.loss.r1_interval = 1  # R1 in every D step (no lazy regularisation in StyleGAN)
  config.loss.pl_weight = 0.0
  config.loss.style_mixing_prob = 0.9
  config.optim.g_lr = config.optim.d_lr = 0.001
  config.optim.adam_b1, config.optim.adam_b2, config.optim.adam_eps = 0.0, 0.99, 1e-8
  config.ema.kimg = 10.0
  config.checkpoint.every_steps = 2000
  config.log.every_steps = 125
  config.log.image_every_steps = 1250
  config.log.grid_rows, config.log.grid_cols = 4, 8
  if variant == 'fmnist':
    apply_fmnist(config)
  elif variant == 'tiny':
    apply_tiny(config)
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of ffhq_stylegan.py (known: fmnist, tiny).')
  return config


def apply_fmnist(config):
  """The recipe at 32x32 on Fashion-MNIST for two CPU cores: 8 -> 32, 4 kimg per fade-in and
  per stabilisation, 24 kimg in all (32x32 from 20 kimg on)."""
  config.data.name = 'fashion_mnist_local'
  config.data.xflip = False
  config.model.z_dim = config.model.w_dim = 64
  config.model.mapping_layers = 4
  config.model.channel_base = 512  # 32 channels at 8..16, 16 at 32
  config.model.channel_max = 32
  config.schedule.growing.fade_kimg = 4.0
  config.schedule.growing.stabilize_kimg = 4.0
  config.schedule.growing.batch_sizes = ''
  config.schedule.batch_size = 16
  config.schedule.kimg = 24.0
  config.loss.r1_gamma = 1.0  # small images: a small gamma (NVIDIA's CIFAR runs use 0.01-1)
  config.ema.kimg = 1.0
  config.checkpoint.every_steps = 500
  config.log.every_steps = 50
  config.log.image_every_steps = 250
  config.log.grid_rows, config.log.grid_cols = 8, 8
  return config


def apply_tiny(config):
  """Minutes on a CPU: a tiny network through the three stages of 8 -> 32 (12 steps)."""
  apply_fmnist(config)
  config_base.apply_tiny(config, kimg=0.096, every_steps=6)  # 12 steps, the last 4 at 32x32
  config.model.mapping_layers = 2
  config.schedule.growing.fade_kimg = 0.016
  config.schedule.growing.stabilize_kimg = 0.016
  config.log.every_steps = 4
  return config
