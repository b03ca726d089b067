"""ProGAN on CelebA-HQ 1024x1024 (Karras et al. 2018), the paper's schedule.

  python -m gan_jax.main --config experiments/celebahq_progan.py --workdir gs://bucket/pg1024
  python -m gan_jax.main --config experiments/celebahq_progan.py:fmnist --workdir runs/pg_fmnist
  python -m gan_jax.main --config experiments/celebahq_progan.py:tiny --workdir /tmp/pg_tiny

Growing from 4x4: each resolution trains 600 kimg at alpha 1, then the next one fades in over
600 kimg (1024x1024 is reached after 9600 kimg; 15000 kimg in all, the official total_kimg).
WGAN-GP (lambda 10, target 1) with the drift term 0.001, Adam lr 0.001 betas (0, 0.99), minibatch
16 up to 128x128 then 14, 6, 3 (the paper's, sized for one GPU's memory: the config uses a
1-device mesh; on more devices give every resolution a batch divisible by them, e.g.
--config.mesh.data=-1 --config.schedule.growing.batch_sizes=256:16,512:8,1024:8 on 8 devices).
Minibatch std over the whole minibatch, as the paper describes it (mbstd_group_size 0).

The data is TFDS's celeb_a_hq/1024 (the README says how to build it; a missing dataset stops
the run with the recipe). `:fmnist` is the same recipe at 32x32 on Fashion-MNIST, sized for two
CPU cores (12 min measured on two busy cores); `:tiny` runs the code path in about two minutes
(mostly compiling the step once per stage).
"""

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'celeb_a_hq/1024'
  config.data.xflip = True  # the official CelebA-HQ run mirrors
  config.model.name = 'progan'
  config.model.z_dim = 512
  config.model.channel_base = 16384  # the official fmap_base 8192: 512 up to 32x32, 16 at 1024
  config.model.channel_max = 512
  config.model.mbstd_group_size = 0  # the whole minibatch
  config.schedule.growing.grow = True
  config.schedule.growing.start_resolution = 4
  config.schedule.growing.fade_kimg = 600.0
  config.schedule.growing.stabilize_kimg = 600.0
  config.schedule.growing.batch_sizes = '256:14,512:6,1024:3'
  config.schedule.growing.reset_optimizer = True
  config.mesh.data = 1  # the paper's batches 14, 6 and 3 (see the docstring for more devices)
  config.schedule.batch_size = 16  # up to 128x128 (growing.batch_sizes: the larger ones)
  config.schedule.kimg = 15000.0
  config.loss.name = 'wgan_gp'
  config.loss.wgan_lambda = 10.0
  config.loss.wgan_target = 1.0
  config.loss.wgan_drift = 0.001
  config.optim.g_lr = config.optim.d_lr = 0.001
  config.optim.adam_b1, config.optim.adam_b2, config.optim.adam_eps = 0.0, 0.99, 1e-8
  config.loss.r1_gamma = 0.0
  config.loss.pl_weight = 0.0
  config.loss.style_mixing_prob = 0.0
  config.ema.kimg = 11.1  # the official G EMA 0.999 per minibatch of 16
  config.checkpoint.every_steps = 5000
  config.log.every_steps = 250
  config.log.image_every_steps = 2500
  config.log.grid_rows, config.log.grid_cols = 4, 8
  if variant == 'fmnist':
    apply_fmnist(config)
  elif variant == 'tiny':
    apply_tiny(config)
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of celebahq_progan.py (known: fmnist, tiny).')
  return config


def apply_fmnist(config):
  """The recipe at 32x32 on Fashion-MNIST for two CPU cores: 4 -> 32, 4 kimg per fade-in and per
  stabilisation, 30 kimg in all (32x32 from 28 kimg on)."""
  config.data.name = 'fashion_mnist_local'
  config.data.xflip = False
  config.model.z_dim = 128
  config.model.channel_base = 512  # 32 channels at 4..16, 16 at 32
  config.model.channel_max = 32
  config.model.mbstd_group_size = 4
  config.mesh.data = -1
  config.schedule.growing.fade_kimg = 4.0
  config.schedule.growing.stabilize_kimg = 4.0
  config.schedule.growing.batch_sizes = ''
  config.schedule.batch_size = 16
  config.schedule.kimg = 30.0
  config.ema.kimg = 1.0  # a short run: a short EMA half-life
  config.checkpoint.every_steps = 500
  config.log.every_steps = 50
  config.log.image_every_steps = 250
  config.log.grid_rows, config.log.grid_cols = 8, 8
  return config


def apply_tiny(config):
  """Minutes on a CPU: a tiny network through all four stages of 4 -> 32 (16 steps)."""
  apply_fmnist(config)
  config_base.apply_tiny(config, kimg=0.128, every_steps=8)  # 16 steps, the last 4 at 32x32
  config.schedule.growing.fade_kimg = 0.016  # two steps of 8
  config.schedule.growing.stabilize_kimg = 0.016
  config.schedule.growing.batch_sizes = '32:8'
  config.log.every_steps = 4
  return config
