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
  config_base.apply_encoder_run(config, 'runs/fmnist_cond')
  if variant == 'tiny':
    return config_base.apply_encoder_tiny(config)
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of fashion_mnist_encoder.py (known: '
                     f'{", ".join(v for v in VARIANTS if v)}, tiny).')
  config.encoder.degradations = VARIANTS[variant]
  return config
