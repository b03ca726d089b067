"""StyleGAN2 on the embedded Fashion-MNIST (32x32 grayscale), sized for a 2-core CPU.

  python -m gan_jax.main --config experiments/fashion_mnist.py --workdir runs/fmnist
  python -m gan_jax.main --config experiments/fashion_mnist.py:tiny --workdir runs/fmnist_tiny
  python bench/train_step.py --config experiments/fashion_mnist.py:bench32 --steps 5

The data comes from Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
"""

import ml_collections

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'fashion_mnist_local'
  config.model.z_dim = 128
  config.model.w_dim = 128
  config.model.mapping_layers = 2
  config.model.channel_base = 1024  # 32 channels at every resolution up to 32
  config.model.channel_max = 32
  # Tuned for wall-clock on 2 CPU cores: small batches (more updates per second), NVIDIA's
  # small-resolution lr, a moderate R1 and no path-length term (as NVIDIA's CIFAR config).
  # Against batch 32 / gamma 0.1 / PL on, this gave visibly more varied clothes at 16 kimg.
  config.train.batch_size = 16
  config.train.kimg = 50.0
  config.train.g_lr = config.train.d_lr = 0.0025
  config.train.r1_gamma = 1.0
  config.train.pl_weight = 0.0
  config.train.ema_kimg = 1.0  # short run: a short EMA half-life
  config.train.ema_rampup = 0.05
  config.train.style_mixing_prob = 0.0
  config.checkpoint.every_steps = 500
  config.log.every_steps = 25
  config.log.image_every_steps = 500
  if variant == 'tiny':
    apply_tiny(config)
  elif variant == 'bench32':
    apply_bench32(config)
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of fashion_mnist.py (known: tiny, bench32).')
  return config


def apply_bench32(config):
  """The speed-target network of bench/README.md: StyleGAN2 at 32x32x3 with R1 in every step.

  python bench/train_step.py --config experiments/fashion_mnist.py:bench32 --steps 5
  times it on random 3-channel images (config.bench sets the benchmark's image shape); training
  this variant would use it on the 1-channel Fashion-MNIST images.
  """
  config.model.z_dim = 512
  config.model.w_dim = 512
  config.model.mapping_layers = 2
  config.model.channel_base = 4096  # 128 channels at every resolution up to 32
  config.model.channel_max = 128
  config.model.mbstd_group_size = 4
  config.model.conv_clamp = 256
  config.train.batch_size = 32
  config.train.style_mixing_prob = 0.0
  config.train.pl_weight = 0.0
  config.train.r1_gamma = 0.01
  config.train.r1_interval = 1  # G main + D main + D R1 in every step
  config.bench = ml_collections.ConfigDict({'resolution': 32, 'channels': 3})
  return config


def apply_tiny(config):
  """Seconds on a CPU: a tiny network, a few steps; same code path."""
  config.model.z_dim = 16
  config.model.w_dim = 16
  config.model.mapping_layers = 2
  config.model.channel_base = 128
  config.model.channel_max = 8
  config.train.batch_size = 8
  config.train.kimg = 0.08  # 10 steps
  config.train.pl_weight = 2.0  # exercise every regulariser's code path
  config.train.r1_interval = 4
  config.train.pl_interval = 2
  config.checkpoint.every_steps = 5
  config.log.every_steps = 5
  config.log.image_every_steps = 5
  config.log.grid_rows = 2
  config.log.grid_cols = 4
  return config
