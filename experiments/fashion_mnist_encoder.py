"""An encoder into the conditional Fashion-MNIST StyleGAN2's W+ (pSp / e4e), and its
image-to-image variants; the generator stays frozen (config.loss.name='encoder').

  # the generator first (experiments/fashion_mnist.py, conditional):
  python -m gan_jax.main --config experiments/fashion_mnist.py --workdir runs/fmnist_cond \
      --config.model.conditional=True --config.schedule.kimg=20
  # then its encoder (inversion), or one per task:
  python -m gan_jax.main --config experiments/fashion_mnist_encoder.py --workdir runs/enc
  python -m gan_jax.main --config experiments/fashion_mnist_encoder.py:down4 --workdir runs/enc_sr4
  ... :down8 (super-resolution x8), :mask (inpainting), :edges (sketch -> image),
  ... :class (sneaker -> ankle boot, class:7>9, on the generator's own pairs)
  python -m gan_jax.main --config experiments/fashion_mnist_encoder.py:tiny \
      --config.init.source=PATH --workdir /tmp/enc_tiny    # seconds: the tests' network

--config.init.source names the generator (default runs/fmnist_cond); the model section must
describe it (the conditional fashion_mnist.py network here). In an encoder run, state.d_params is
the encoder; G and G_ema are the source's, frozen. `gan_jax.load_encoder(workdir)` loads it,
`python -m gan_jax.tools.translate` runs it on a folder of images.
"""

from pathlib import Path

from gan_jax import config_base


def _fashion_mnist_config():
  """experiments/fashion_mnist.py's config (the generator's run)."""
  return config_base.load(str(Path(__file__).with_name('fashion_mnist.py')))


VARIANTS = {'': '', 'down4': 'down4', 'down8': 'down8', 'mask': 'mask', 'edges': 'edges',
            'class': 'class:7>9'}


def get_config(variant: str = ''):
  config = _fashion_mnist_config()
  config.model.conditional = True
  config.loss.name = 'encoder'
  config.init.source = 'runs/fmnist_cond'
  config.encoder.channels = 32
  config.encoder.max_channels = 128
  config.encoder.lr = 0.001
  config.encoder.pixel_weight = 1.0
  config.encoder.perceptual_weight = 0.0  # the Inception distance is ~50x a step's cost on a CPU
  config.encoder.w_reg_weight = 0.01
  config.schedule.batch_size = 16
  config.schedule.kimg = 16.0  # 1000 steps
  config.checkpoint.every_steps = 250
  config.log.every_steps = 50
  config.log.image_every_steps = 250
  if variant == 'tiny':
    return apply_tiny(config)
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of fashion_mnist_encoder.py (known: '
                     f'{", ".join(v for v in VARIANTS if v)}, tiny).')
  config.encoder.degradations = VARIANTS[variant]
  return config


def apply_tiny(config):
  """Seconds on a CPU: the tests' tiny generator (tests/tiny_generator.py: 32x32x1, z and w 16,
  channels 16, unconditional), an 8-channel encoder, 10 steps of 8. init.source has no default:
  give the tiny generator's export or workdir."""
  config_base.apply_tiny(config)
  config.model.conditional = False
  config.model.channel_max = 16
  config.init.source = ''
  config.encoder.channels = 8
  config.encoder.max_channels = 16
  config.encoder.lr = 0.003
  return config
