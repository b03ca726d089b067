"""StyleGAN2 on the embedded Fashion-MNIST (32x32 grayscale), sized for a 2-core CPU.

  python -m gan_jax.main --config experiments/fashion_mnist.py --workdir runs/fmnist
  python -m gan_jax.main --config experiments/fashion_mnist.py:tiny --workdir runs/fmnist_tiny

The data comes from Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
"""

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'fashion_mnist_local'
  config.model.z_dim = 128
  config.model.w_dim = 128
  config.model.mapping_layers = 2
  config.model.channel_base = 1024  # 32 channels at every resolution up to 32
  config.model.channel_max = 32
  config.train.batch_size = 32
  config.train.kimg = 40.0
  config.train.r1_gamma = 0.1  # small images want a weak R1 (NVIDIA's CIFAR config uses 0.01)
  config.train.ema_kimg = 2.0  # short run: a shorter EMA half-life
  config.train.ema_rampup = 0.05
  config.train.style_mixing_prob = 0.0
  config.checkpoint.every_steps = 250
  config.log.every_steps = 25
  config.log.image_every_steps = 250
  if variant == 'tiny':
    apply_tiny(config)
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of fashion_mnist.py (known: tiny).')
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
  config.train.r1_interval = 4
  config.train.pl_interval = 2
  config.checkpoint.every_steps = 5
  config.log.every_steps = 5
  config.log.image_every_steps = 5
  config.log.grid_rows = 2
  config.log.grid_cols = 4
  return config
