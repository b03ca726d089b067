"""An encoder into the LFW faces StyleGAN2's W+ (pSp / e4e), inversion only; the generator stays
frozen (config.loss.name='encoder'). It encodes real faces for the progression grid of
`gan_jax.tools.edit --encoder` (README "### Encoder and image-to-image").

  # the generator first (experiments/lfw_faces.py):
  python -m gan_jax.main --config experiments/lfw_faces.py --workdir runs/lfw_faces
  # then its encoder:
  python -m gan_jax.main --config experiments/lfw_faces_encoder.py --workdir runs/lfw_enc
  python -m gan_jax.main --config experiments/lfw_faces_encoder.py:tiny \
      --config.init.source=PATH --workdir /tmp/enc_tiny    # seconds: the tests' network

--config.init.source names the generator (default runs/lfw_faces); the model section must
describe it (lfw_faces.py's network here). The encoder settings are fashion_mnist_encoder.py's.
"""

from pathlib import Path

from gan_jax import config_base


def _lfw_faces_config():
  """experiments/lfw_faces.py's config (the generator's run)."""
  return config_base.load(str(Path(__file__).with_name('lfw_faces.py')))


def get_config(variant: str = ''):
  config = _lfw_faces_config()
  config.loss.name = 'encoder'
  config.init.source = 'runs/lfw_faces'
  config.encoder.channels = 32
  config.encoder.max_channels = 128
  config.encoder.lr = 0.001
  config.encoder.pixel_weight = 1.0
  config.encoder.perceptual_weight = 0.0  # the Inception distance is ~50x a step's cost on a CPU
  config.encoder.w_reg_weight = 0.01
  config.encoder.degradations = ''  # inversion only
  config.schedule.batch_size = 16
  config.schedule.kimg = 16.0  # 1000 steps
  config.checkpoint.every_steps = 250
  config.log.every_steps = 50
  config.log.image_every_steps = 250
  if variant == 'tiny':
    return apply_tiny(config)
  if variant:
    raise ValueError(f'Unknown variant {variant!r} of lfw_faces_encoder.py (known: tiny).')
  return config


def apply_tiny(config):
  """Seconds on a CPU: the tests' tiny generator (tests/tiny_generator.py: 32x32x1, z and w 16,
  channels 16, unconditional), an 8-channel encoder, 10 steps of 8 on the faces. init.source has
  no default: give the tiny generator's export or workdir."""
  config_base.apply_tiny(config)
  config.data.name = 'lfw_faces'
  config.model.conditional = False
  config.model.channel_max = 16
  config.init.source = ''
  config.encoder.channels = 8
  config.encoder.max_channels = 16
  config.encoder.lr = 0.003
  return config
