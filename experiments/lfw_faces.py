"""Few-shot StyleGAN2 on 100 faces (LFW via scikit-image, 32x32 grayscale), sized for a CPU.

  python -m gan_jax.main --config experiments/lfw_faces.py --workdir runs/lfw_faces
  python -m gan_jax.main --config experiments/lfw_faces.py:tiny --workdir runs/lfw_tiny

The dataset `lfw_faces` (gan_jax/data/lfw.py) is built offline on first use from the faces that
scikit-image installs. With 100 images the discriminator overfits: with only x-flips (200
distinct images) its sign statistic r_t passes 0.6 at ~44 kimg and keeps rising (0.67 at 50 kimg,
measured; README "Few-shot experiment"). experiments/lfw_faces_ada.py is the same run with ADA.
"""

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'lfw_faces'
  config.data.xflip = True  # faces are left-right symmetric: doubles the 100 images
  # The Fashion-MNIST CPU network (32 channels at every resolution up to 32).
  config.model.z_dim = 128
  config.model.w_dim = 128
  config.model.mapping_layers = 2
  config.model.channel_base = 1024
  config.model.channel_max = 32
  config.schedule.batch_size = 16
  # D starts to overfit (r_t > 0.6) after ~40 kimg at gamma 0.01: the run that shows ADA's point.
  config.schedule.kimg = 50.0
  config.optim.g_lr = config.optim.d_lr = 0.0025
  # NVIDIA's CIFAR-10 gamma: a light R1 leaves D free to memorise the 100 faces, the overfitting
  # ADA is for (with gamma 1, r_t stayed at 0.1-0.3 over 20 kimg: no overfitting to show).
  config.loss.r1_gamma = 0.01
  config.loss.pl_weight = 0.0
  config.ema.kimg = 1.0  # short run: a short EMA half-life
  config.ema.rampup = 0.05
  config.loss.style_mixing_prob = 0.0
  config.checkpoint.every_steps = 250
  config.log.every_steps = 25
  config.log.image_every_steps = 250
  if variant == 'tiny':
    # Seconds on a CPU: the shared tiny network, 10 steps on the faces; same code path.
    config_base.apply_tiny(config)
    config.data.name = 'lfw_faces'
    config.loss.r1_interval = 4
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of lfw_faces.py (known: tiny).')
  return config
