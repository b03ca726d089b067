"""The studio's rendering: one image (batch 1) from a request's settings, through the generator's
jitted mapping and synthesis, so no slider change recompiles anything.

`Renderer(g, directions_table)` holds the loaded generator (`gan_jax.tools.loading`) and,
optionally, a directions table (`gan_jax.tools.directions`). A request (`Settings`) names the
source latent (a seed, an explicit z, or an uploaded image's projection), ψ, the class, the noise
mode, a second seed whose ws replace a layer range (style mixing, as
`gan_jax.tools.style_mixing`), a strength per direction (added as `gan_jax.tools.edit` does, in
the direction's stored layer range) and StyleGAN3's translate / rotate.

Why nothing recompiles: `LoadedGenerator`'s mapping and synthesis are jitted with ψ, the noise
key and the input transform as traced arguments and only the noise mode (three values) and the
truncation cutoff (never set here) static; every call is batch 1, z (1, z_dim), ws (1, num_ws,
w_dim); mixing and edits are numpy on the ws between the two calls; a StyleGAN3 request always
passes a transform (the identity when translate and rotate are 0), and a projection's optimised
noise maps are passed as variables of the same shapes. So after the first image of each noise
mode every image costs one mapping and one synthesis call.

JAX's compiled calls are thread safe, so concurrent requests render concurrently; only the
projections (heavier: a few optimisation steps) run one at a time, and the stored projections
are guarded by a lock.
"""

import dataclasses
import io
import threading
from typing import Optional

import numpy as np

from gan_jax import cli_errors
from gan_jax.images import to_uint8
from gan_jax.tools import edit
from gan_jax.tools import generate
from gan_jax.tools import loading
from gan_jax.tools import perceptual
from gan_jax.tools import projector
from gan_jax.tools import style_mixing

MAX_PROJECTIONS = 32  # uploads kept per server (oldest dropped): memory stays bounded


@dataclasses.dataclass
class Settings:
  """One image's settings, as the page sends them."""
  seed: int = 0
  z: Optional[list] = None  # explicit z (z_dim floats): replaces the seed's
  latent: str = ''  # id of a stored projection: replaces seed / z
  psi: float = 1.0
  class_idx: Optional[int] = None
  noise: str = 'const'
  mix_seed: Optional[int] = None
  mix_layers: str = 'coarse'
  strengths: dict = dataclasses.field(default_factory=dict)
  translate: tuple = (0.0, 0.0)
  rotate: float = 0.0


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 (H, W, C) -> PNG file bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format='PNG')
  return buf.getvalue()


class Renderer:
  """Renders `Settings` to uint8 images with one loaded generator."""

  def __init__(self, g: loading.LoadedGenerator, directions_table: Optional[dict] = None,
               project_steps: int = 100):
    self.g = g
    self.directions = {}  # name -> (step (w_dim,), ws indices)
    if directions_table is not None:
      if not g.family.w_space:
        raise cli_errors.UserError(f'--directions: a {g.family.title} generator has no W space')
      for name in directions_table['names']:
        step, layers = edit.direction_step(g, directions_table, str(name))
        self.directions[str(name)] = (np.asarray(step, np.float32),
                                      edit.layer_indices(layers, g.num_ws))
    self.project_steps = project_steps
    self._projections = {}  # id -> (ws (1, num_ws, w_dim), variables with the noise maps)
    self._lock = threading.Lock()
    self._project_lock = threading.Lock()
    self._distance = perceptual.Distance('pixel')
    self._count = 0

  def info(self) -> dict:
    g = self.g
    return {'source': g.source, 'family': g.family.title, 'z_dim': g.z_dim, 'c_dim': g.c_dim,
            'w_dim': g.w_dim, 'num_ws': g.num_ws, 'resolution': g.img_resolution,
            'channels': g.img_channels, 'w_space': bool(g.family.w_space),
            'transform': bool(g.family.input_transform), 'noise_modes': list(loading.NOISE_MODES),
            'directions': [{'name': n, 'layers': [int(i) for i in idx]}
                           for n, (_, idx) in self.directions.items()],
            'project_steps': self.project_steps}

  def _latent_z(self, s: Settings) -> np.ndarray:
    if s.z is None:
      return generate.seed_latent(s.seed, self.g.z_dim)
    z = np.asarray(s.z, np.float32).reshape(1, -1)
    if z.shape[1] != self.g.z_dim:
      raise cli_errors.UserError(f'z must hold {self.g.z_dim} numbers, got {z.shape[1]}')
    return z

  def _class(self, s: Settings) -> Optional[np.ndarray]:
    if not self.g.c_dim:
      return None
    c = 0 if s.class_idx is None else s.class_idx
    if not 0 <= c < self.g.c_dim:
      raise cli_errors.UserError(f'class must lie in [0, {self.g.c_dim}), got {c}')
    return np.array([c])

  def _transform(self, s: Settings) -> Optional[np.ndarray]:
    if not self.g.family.input_transform:
      if tuple(s.translate) != (0, 0) or s.rotate:
        raise cli_errors.UserError(f'a {self.g.family.title} generator takes no translate / '
                                   'rotate (StyleGAN3 only)')
      return None
    from gan_jax.models import stylegan3  # pylint: disable=g-import-not-at-top
    return stylegan3.user_transform(tuple(float(t) for t in s.translate), float(s.rotate))

  def render(self, s: Settings) -> np.ndarray:
    """uint8 (H, W, C) for the settings."""
    g = self.g
    if s.noise not in loading.NOISE_MODES:
      raise cli_errors.UserError(f'noise must be one of {loading.NOISE_MODES}, got {s.noise!r}')
    unknown = sorted(set(s.strengths) - set(self.directions))
    if unknown:
      have = ', '.join(self.directions) or 'none (start the studio with --directions FILE)'
      raise cli_errors.UserError(f'unknown direction {unknown[0]!r}; the directions: {have}')
    c, transform = self._class(s), self._transform(s)
    if not g.family.w_space:
      if s.latent or s.mix_seed is not None or any(s.strengths.values()):
        raise cli_errors.UserError(f'a {g.family.title} generator has no W space: no mixing, '
                                   'edits or projections')
      return to_uint8(g(self._latent_z(s), c, psi=s.psi, noise=s.noise, rng=s.seed))[0]
    variables = g.variables
    if s.latent:
      with self._lock:
        if s.latent not in self._projections:
          raise cli_errors.UserError(f'no projection {s.latent!r} (upload the image again)')
        ws, variables = self._projections[s.latent]
    else:
      ws = g.mapping(self._latent_z(s), c, psi=s.psi)
    if s.mix_seed is not None:
      indices = style_mixing.style_indices(s.mix_layers, g.num_ws)
      other = g.mapping(generate.seed_latent(s.mix_seed, g.z_dim), c, psi=s.psi)
      ws = style_mixing.mix(ws, other, indices)
    for name, strength in s.strengths.items():
      step, indices = self.directions[name]
      ws = edit.apply_edit(ws, step, float(strength), indices)
    # The jitted synthesis with the variables as an argument: a projection's noise maps (same
    # shapes as the stored ones) do not recompile it.
    images = g._synthesis(variables, np.asarray(ws, np.float32), g._rng(s.seed),  # pylint: disable=protected-access
                          noise_mode=s.noise, transform=transform)
    return to_uint8(np.asarray(images, np.float32))[0]

  def project(self, data: bytes) -> tuple[str, np.ndarray]:
    """Projects an uploaded image file (pixel distance, `project_steps` steps); returns (its id,
    the target as the generator sees it, uint8 (H, W, C))."""
    from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
    g = self.g
    if not g.family.w_space:
      raise cli_errors.UserError(f'a {g.family.title} generator has no W space to project into')
    try:
      with Image.open(io.BytesIO(data)) as image:
        image.load()
        image = image.convert('L' if g.img_channels == 1 else 'RGB')
    except (UnidentifiedImageError, OSError, ValueError) as e:
      raise cli_errors.UserError(f'not an image file PIL can read ({e})') from None
    r = g.img_resolution
    w, h = image.size
    side = min(w, h)
    image = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side,
                        (h - side) // 2 + side)).resize((r, r), Image.LANCZOS)
    target = (np.asarray(image, np.float32).reshape(1, r, r, g.img_channels) - 128.0) / 127.5
    cfg = projector.ProjectorConfig(num_steps=self.project_steps, w_avg_samples=2000)
    with self._project_lock:
      result = projector.project(g, target, cfg=cfg, distance=self._distance)
    variables = projector.with_noise(g.variables, {n: np.asarray(v) for n, v in
                                                   result.noise.items()})
    with self._lock:
      self._count += 1
      latent = f'p{self._count}'
      self._projections[latent] = (result.ws[-1:].astype(np.float32), variables)
      while len(self._projections) > MAX_PROJECTIONS:
        self._projections.pop(next(iter(self._projections)))
    return latent, to_uint8(target)[0]
