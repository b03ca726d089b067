"""`load_encoder(workdir)`: a trained encoder run as a plain callable (also `gan_jax.load_encoder`).

  e = gan_jax.load_encoder('runs/enc')        # an encoder run's workdir (loss.name 'encoder')
  ws = e(images)                               # (N, num_ws, w_dim): W+ of (N, H, W, C) images
  out = e.reconstruct(images)                  # G(ws): one forward pass each, no optimisation
  degraded = e.degrade(images, seed=0)         # the run's degradations, as in training
  e.generator                                  # its frozen G (a gan_jax.load_generator result)

Images are NHWC floats in the generator's range [-1, 1]. `e(x)` expects what the encoder was
trained to read: for an image-to-image run (config.encoder.degradations) that is the degraded
image (`degrade`, or a real low-res / masked / sketch image at full size). The generator is the
frozen copy the run trained against (its G_ema), so the encoder and G always match.
"""

import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from gan_jax import checkpointing
from gan_jax import cli_errors
from gan_jax import degradations as degradations_lib
from gan_jax.models import encoder as encoder_model
from gan_jax.tools import loading


class LoadedEncoder:
  """An encoder with its weights and its generator (see the module doc).

  Attributes:
    module: the Flax Encoder; params: its weights; generator: the LoadedGenerator it inverts;
    degradations: the parsed config.encoder.degradations; config: the run's config;
    source: where it was loaded from.
  """

  def __init__(self, module, params, generator: loading.LoadedGenerator, config,
               source: str = ''):
    self.module, self.generator, self.config, self.source = module, generator, config, source
    self.params = jax.device_put(params)
    self.degradations = degradations_lib.parse(config.encoder.degradations,
                                               generator.img_resolution, generator.c_dim)
    self.num_ws, self.w_dim = generator.num_ws, generator.w_dim
    self.img_resolution, self.img_channels = generator.img_resolution, generator.img_channels
    w_avg = jnp.asarray(generator.w_avg)
    self._encode = jax.jit(lambda p, x: w_avg + module.apply({'params': p}, x))
    self._degrade = jax.jit(lambda x, key: degradations_lib.apply(x, self.degradations, key))

  def __repr__(self):
    return (f'LoadedEncoder(num_ws={self.num_ws}, w_dim={self.w_dim}, img_resolution='
            f'{self.img_resolution}, degradations={self.config.encoder.degradations!r}, '
            f'source={self.source!r})')

  def _images(self, images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    want = (self.img_resolution, self.img_resolution, self.img_channels)
    if images.ndim != 4 or images.shape[1:] != want:
      raise cli_errors.UserError(f'images must be (N, {", ".join(map(str, want))}), got '
                                 f'{images.shape}')
    return images

  def __call__(self, images) -> np.ndarray:
    """ws (N, num_ws, w_dim) of images (N, H, W, C) in [-1, 1]."""
    return np.asarray(self._encode(self.params, self._images(images)), np.float32)

  def reconstruct(self, images) -> np.ndarray:
    """G(E(images)) (N, H, W, C), rendered with G's stored noise maps (as in training)."""
    return self.generator.synthesis(self(images))

  def degrade(self, images, seed: int = 0) -> np.ndarray:
    """The run's degradations applied to clean images (mask positions drawn from `seed`)."""
    return np.asarray(self._degrade(self._images(images), jax.random.PRNGKey(seed)), np.float32)


def load_encoder(workdir: str | os.PathLike, step: Optional[int] = None) -> LoadedEncoder:
  """The encoder of an encoder run's workdir (latest checkpoint, or `step`) with its generator."""
  path = epath.Path(os.path.abspath(os.fspath(workdir)))
  workdir_path, dir_step = checkpointing.workdir_and_step(path) if path.exists() else (None, None)
  if workdir_path is None:
    raise cli_errors.UserError(f'{path} is not a training workdir (config.json + checkpoints/)')
  config = ml_collections.ConfigDict(json.loads((workdir_path / 'config.json').read_text()))
  if config.get('loss', {}).get('name') != 'encoder':
    raise cli_errors.UserError(f'{workdir_path} is not an encoder run (its config.loss.name is '
                               f'{config.get("loss", {}).get("name")!r}, not \'encoder\')')
  step = dir_step if dir_step is not None else step
  generator = loading.load_generator(workdir_path, step=step)  # the run's frozen G_ema
  restored, step = checkpointing.restore_parts(workdir_path / 'checkpoints', ('d_params',), step)
  module = encoder_model.build(config.encoder, generator.module)
  return LoadedEncoder(module, restored['d_params'], generator, config,
                       source=f'{workdir_path} step {step}')
