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
  config_base.apply_encoder_run(config, 'runs/lfw_faces')
  config.encoder.degradations = ''  # inversion only
  if variant == 'tiny':
    return config_base.apply_encoder_tiny(config)
  if variant:
    raise ValueError(f'Unknown variant {variant!r} of lfw_faces_encoder.py (known: tiny).')
  return config
