"""`load_generator(path)`: a trained or imported generator as a plain callable (also
`gan_jax.load_generator`).

  g = gan_jax.load_generator('exports/ffhq')          # or a training workdir, or a .pkl
  z = np.random.RandomState(0).randn(4, g.z_dim)
  images = g(z, psi=0.7)                               # (4, H, W, C) float32 numpy, NHWC
  ws = g.mapping(z, psi=0.7)                           # (4, num_ws, w_dim)
  images = g.synthesis(ws)                             # the same images

Generators without a W space (ProGAN, model 'progan': no mapping network, truncation or noise;
`gan_jax.models.Family`): `g(z)` works (psi must be 1), `g.mapping` / `g.synthesis` refuse with a
message. A generator of a
progressive run that had not finished growing (ProGAN or StyleGAN; the workdir's checkpoint or
the export records its stage and alpha) makes stage x stage images, faded in by alpha as in
training, nearest-upsampled to the full resolution.

Images are in the generator's own output range (about [-1, 1] once trained), never clipped; map
to uint8 with NVIDIA's `x * 127.5 + 128`, clipped. The calls are jitted: psi is traced (changing
it does not recompile); noise mode and truncation cutoff are static; each new batch size compiles
once.
"""

import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from gan_jax import checkpointing
from gan_jax import cli_errors
from gan_jax import models
from gan_jax.models import layers
from gan_jax.tools import export

NOISE_MODES = ('const', 'random', 'none')


class LoadedGenerator:
  """A generator with its weights: `g(z, c=None, psi=1.0, noise='const') -> images`.

  Attributes:
    z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws: the network's sizes (w_dim and
      num_ws 0 without a W space).
    family: its `gan_jax.models.Family` (what it can do).
    module: the Flax Generator; variables: its {'params', 'buffers'} (device arrays);
    kwargs: the constructor arguments; source: where it was loaded from.
  """

  def __init__(self, module, variables: dict, source: str = '', growth: Optional[dict] = None):
    self.module = module
    self.variables = jax.device_put({'params': variables['params'],
                                     'buffers': variables.get('buffers', {})})
    self.kwargs = export.module_kwargs(module)
    self.source = source
    info = models.describe(module)
    self.family = info.family
    self.z_dim, self.c_dim = info.z_dim, info.c_dim
    self.w_dim = info.w_dim or 0
    self.img_resolution, self.img_channels = info.img_resolution, info.img_channels
    self.num_ws = info.num_ws or 0
    # A progressive generator caught mid-growth: {'stage', 'alpha'}; None: the full network.
    self.growth = growth if growth and (growth['stage'] < module.img_resolution or
                                        growth['alpha'] < 1) else None
    grow = ({} if self.growth is None else
            {'stage': int(self.growth['stage']), 'alpha': float(self.growth['alpha'])})

    def upsample(images):
      return layers.upsample_nearest(images, module.img_resolution // images.shape[1])

    def mapping(variables, z, c, psi, truncation_cutoff):
      return module.apply(variables, z, c, truncation_psi=psi,
                          truncation_cutoff=truncation_cutoff, method='map')

    def synthesis(variables, ws, rng, noise_mode, transform=None):
      extra = {} if transform is None else {'transform': transform}
      return upsample(module.apply(variables, ws, rngs={'noise': rng}, method='synthesize',
                                   **self.family.noise_kwargs(noise_mode), **grow, **extra))

    def generate(variables, z, c, psi, rng, truncation_cutoff, noise_mode, transform=None):
      if not self.family.w_space:  # no mapping, truncation (or noise, for ProGAN)
        return upsample(module.apply(variables, z, c, rngs={'noise': rng},
                                     **self.family.noise_kwargs(noise_mode), **grow))
      return synthesis(variables, mapping(variables, z, c, psi, truncation_cutoff), rng,
                       noise_mode, transform)

    self._mapping = jax.jit(mapping, static_argnames=('truncation_cutoff',))
    self._synthesis = jax.jit(synthesis, static_argnames=('noise_mode',))
    self._generate = jax.jit(generate, static_argnames=('truncation_cutoff', 'noise_mode'))

  def __repr__(self):
    return (f'LoadedGenerator(z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, '
            f'img_resolution={self.img_resolution}, img_channels={self.img_channels}, '
            f'num_ws={self.num_ws}, source={self.source!r})')

  def _z(self, z) -> np.ndarray:
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape[1] != self.z_dim:
      raise cli_errors.UserError(f'z must be (N, {self.z_dim}), got {z.shape}')
    return z

  def _c(self, c, n: int) -> Optional[np.ndarray]:
    """None for an unconditional G; else (n, c_dim) float labels (int class ids are one-hot)."""
    if self.c_dim == 0:
      if c is not None and np.size(c) > 0:
        raise cli_errors.UserError('this generator is unconditional (c_dim=0): pass c=None')
      return None
    if c is None:
      raise cli_errors.UserError(
          f'this generator is conditional (c_dim={self.c_dim}): pass c, one-hot '
          f'(N, {self.c_dim}) or class indices (N,)')
    c = np.asarray(c)
    if c.ndim == 1 and np.issubdtype(c.dtype, np.integer):
      if c.min(initial=0) < 0 or c.max(initial=0) >= self.c_dim:
        raise cli_errors.UserError(f'class indices must lie in [0, {self.c_dim}), got {c}')
      c = np.eye(self.c_dim, dtype=np.float32)[c]
    if c.shape != (n, self.c_dim):
      raise cli_errors.UserError(f'c must be ({n}, {self.c_dim}), got {c.shape}')
    return c.astype(np.float32)

  def _need_w_space(self, what: str) -> None:
    if not self.family.w_space:
      raise cli_errors.UserError(
          f'{what}: a {self.family.title} generator has no mapping network or W space (no '
          'styles, truncation, projection or W interpolation); call g(z) instead')

  @staticmethod
  def _rng(rng) -> jax.Array:
    if rng is None:
      return jax.random.PRNGKey(0)
    return jax.random.PRNGKey(rng) if isinstance(rng, (int, np.integer)) else rng

  def _transform(self, transform, n: int) -> Optional[np.ndarray]:
    """None, or the input layer's user transform as float32 (3, 3) or (n, 3, 3)."""
    if transform is None:
      return None
    if not self.family.input_transform:
      raise cli_errors.UserError(f'a {self.family.title} generator takes no input transform '
                                 '(translate / rotate are StyleGAN3 features)')
    transform = np.asarray(transform, np.float32)
    if transform.shape not in ((3, 3), (n, 3, 3)):
      raise cli_errors.UserError(f'transform must be (3, 3) or ({n}, 3, 3), got '
                                 f'{transform.shape}')
    return transform

  @staticmethod
  def _noise(noise: str) -> str:
    if noise not in NOISE_MODES:
      raise cli_errors.UserError(f'noise must be one of {NOISE_MODES}, got {noise!r}')
    return noise

  def __call__(self, z, c=None, psi: float = 1.0, noise: str = 'const',
               truncation_cutoff: Optional[int] = None, rng=None,
               transform=None) -> np.ndarray:
    """Images (N, H, W, C) float32 for latents z (N, z_dim) and labels c.

    Args:
      z: (N, z_dim) latents.
      c: None (unconditional), one-hot labels (N, c_dim) or class indices (N,).
      psi: truncation: ws = w_avg + psi * (w - w_avg); 1 is none, 0 the average image.
      noise: 'const' (the stored per-layer noise maps: reproducible), 'random' (drawn from
        `rng`) or 'none'.
      truncation_cutoff: truncate only ws[:, :cutoff] (None: all).
      rng: PRNG key or int seed for noise='random' (None: key 0); the same rng, the same noise.
      transform: StyleGAN3 only: the input layer's 3x3 user transform, (3, 3) or per image
        (N, 3, 3), e.g. `stylegan3.user_transform(translate=(x, y), rotate=degrees)` (None: the
        stored one, normally the identity).
    """
    z = self._z(z)
    if not self.family.w_space and (psi != 1 or truncation_cutoff is not None):
      raise cli_errors.UserError(
          f'a {self.family.title} generator has no truncation trick: use psi=1 (--trunc 1) and '
          'no truncation cutoff')
    images = self._generate(self.variables, z, self._c(c, len(z)), jnp.float32(psi),
                            self._rng(rng), truncation_cutoff=truncation_cutoff,
                            noise_mode=self._noise(noise),
                            transform=self._transform(transform, len(z)))
    return np.asarray(images, np.float32)

  def mapping(self, z, c=None, psi: float = 1.0,
              truncation_cutoff: Optional[int] = None) -> np.ndarray:
    """ws (N, num_ws, w_dim) for z and c, truncated by psi."""
    self._need_w_space('mapping')
    z = self._z(z)
    return np.asarray(self._mapping(self.variables, z, self._c(c, len(z)), jnp.float32(psi),
                                    truncation_cutoff=truncation_cutoff), np.float32)

  def synthesis(self, ws, noise: str = 'const', rng=None, transform=None) -> np.ndarray:
    """Images (N, H, W, C) float32 for ws (N, num_ws, w_dim) (transform: as for __call__)."""
    self._need_w_space('synthesis')
    ws = np.asarray(ws, np.float32)
    if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
      raise cli_errors.UserError(f'ws must be (N, {self.num_ws}, {self.w_dim}), got {ws.shape}')
    return np.asarray(self._synthesis(self.variables, ws, self._rng(rng),
                                      noise_mode=self._noise(noise),
                                      transform=self._transform(transform, len(ws))), np.float32)

  @property
  def w_avg(self) -> np.ndarray:
    """The tracked average w (w_dim,): what psi=0 maps every z to."""
    self._need_w_space('w_avg')
    return np.asarray(self.variables['buffers']['mapping']['w_avg'])


def load_generator(path: str | os.PathLike, step: Optional[int] = None) -> LoadedGenerator:
  """Loads a generator from an export, a training workdir or NVIDIA's weights.

  Args:
    path: an export directory (generator.json, see `gan_jax.tools.export`); a training workdir
      (G_ema of its latest checkpoint), its checkpoints/ directory or one checkpoints/<step>
      directory; or NVIDIA StyleGAN2-ADA or StyleGAN3 weights (.pkl network pickle, .npz or .pt
      state dict),
      converted on the fly (see `gan_jax.tools.convert_nvlabs`).
    step: for a workdir, the checkpoint step (default: latest).
  """
  path = epath.Path(os.path.abspath(os.fspath(path)))
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: give an export directory, a training workdir '
                            'or NVIDIA weights (.pkl/.npz/.pt)')
  if path.is_dir() and export.is_export(path):
    G, variables, config = export.read_export(path)
    return LoadedGenerator(G, variables, source=os.fspath(path), growth=config.get('growth'))
  if path.is_dir():
    workdir, dir_step = checkpointing.workdir_and_step(path)
    if workdir is None:
      raise cli_errors.UserError(
          f'{path} is neither an export (generator.json) nor a training workdir '
          '(config.json + checkpoints/)')
    if step is not None and dir_step is not None and step != dir_step:
      raise cli_errors.UserError(f'{path} is step {dir_step}, but step={step} was asked for')
    G, variables, step = export.restore_workdir(workdir, step if dir_step is None else dir_step)
    return LoadedGenerator(G, variables, source=f'{workdir} step {step}',
                           growth=export.growth_of(workdir, step))
  from gan_jax.tools import convert_nvlabs  # pylint: disable=g-import-not-at-top
  if path.suffix.lower() not in convert_nvlabs.SUFFIXES:
    raise cli_errors.UserError(
        f'{path}: not an export, a workdir, or NVIDIA weights '
        f'({", ".join(convert_nvlabs.SUFFIXES)})')
  model, kwargs, variables = convert_nvlabs.read_nvlabs_model(path)
  return LoadedGenerator(export.build_generator(model, kwargs), variables,
                         source=os.fspath(path))

