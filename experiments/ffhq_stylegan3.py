"""StyleGAN3 (alias-free) generator with StyleGAN2's residual discriminator.

  python bench/train_step.py --config experiments/ffhq_stylegan3.py:bench32 --steps 5

Only the `bench32` variant exists so far: the speed-target network of bench/README.md (issue 21,
point 6), timed on random images. Training StyleGAN3 on FFHQ (NVIDIA's hyper-parameters, the
discriminator blur, config R's settings) is the issue's point 3, not done yet.
"""

import ml_collections

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'ffhq/256'
  config.model.name = 'stylegan3'
  config.model.mapping_layers = 2  # NVIDIA's train.py default for stylegan3
  config.model.w_avg_beta = 0.998  # NVIDIA's StyleGAN3 MappingNetwork
  config.model.conv_kernel = 3  # config T (config R: 1, with use_radial_filters and the
  config.model.use_radial_filters = False  # channel_base / channel_max doubled)
  config.model.magnitude_ema_beta = 0.999
  if variant == 'bench32':
    apply_bench32(config)
  else:
    raise ValueError(f'Unknown variant {variant!r} of ffhq_stylegan3.py (known: bench32).')
  return config


def apply_bench32(config):
  """Config T at 32x32x3: channel_base 4096 / channel_max 128 (128 channels in every layer),
  mapping 2, z/w 512, float32, no clamp, batch 8; residual D with the same channels, minibatch
  std group 4; G main + D main + D R1 (gamma 0.5) in every step; no path length, no style mixing,
  no blur. magnitude_ema_beta as NVIDIA's train.py sets it for batch 8: 0.5 ** (8 / 20000).
  """
  config.model.z_dim = config.model.w_dim = 512
  config.model.channel_base = 4096
  config.model.channel_max = 128
  config.model.mbstd_group_size = 4
  config.model.conv_clamp = 0
  config.model.num_bf16_res = 0
  config.model.magnitude_ema_beta = 0.5 ** (8 / 20e3)
  config.schedule.batch_size = 8
  config.loss.style_mixing_prob = 0.0
  config.loss.pl_weight = 0.0
  config.loss.r1_gamma = 0.5
  config.loss.r1_interval = 1  # G main + D main + D R1 in every step
  config.bench = ml_collections.ConfigDict({'resolution': 32, 'channels': 3})
  return config
