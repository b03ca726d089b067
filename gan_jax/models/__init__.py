"""Model families: name -> `Family` (its Generator and Discriminator classes and what they can
do), `build` from a config, and `family_of` / `describe` for a built module.

The loops and tools ask a module's family what it can do instead of testing its class: whether G
has a W space (a mapping network: `map` / `synthesize` methods, truncation, the w_avg buffer,
style mixing), whether it takes `noise_mode`, whether G and D grow (take `stage` and `alpha`).
Nothing outside `gan_jax.models` tests `isinstance` on a family's classes (tests/test_imports).
"""

import dataclasses
from typing import Any, Optional

import jax

from gan_jax.models import progan
from gan_jax.models import stylegan
from gan_jax.models import stylegan2
from gan_jax.models import stylegan3


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family: its classes and the facts the loops and tools act on."""
  name: str  # config.model.name
  title: str  # for messages: 'ProGAN'
  generator: type
  discriminator: type
  w_space: bool  # G has a mapping network: methods map/synthesize, truncation, w_avg, num_ws
  noise: bool  # G takes noise_mode ('random', 'const', 'none') and keeps noise_const buffers
  grows: bool  # G and D take stage (a static resolution) and alpha (traced): progressive growing
  # G's synthesize / __call__ take `transform`, the input layer's 3x3 user transform (StyleGAN3:
  # translate / rotate the output; `stylegan3.user_transform`).
  input_transform: bool = False
  # G's synthesize takes `update_emas` (StyleGAN3's per-layer magnitude EMAs, in 'buffers'): the
  # train step moves them with D main's fakes, as NVIDIA's run_G(update_emas=True).
  synthesis_emas: bool = False

  def noise_kwargs(self, noise_mode: str) -> dict[str, Any]:
    """The keyword G's __call__ takes for `noise_mode` ({} for a family without noise)."""
    return {'noise_mode': noise_mode} if self.noise else {}


FAMILIES = {f.name: f for f in (
    Family('progan', 'ProGAN', progan.Generator, progan.Discriminator,
           w_space=False, noise=False, grows=True),  # trains with progressive growing only
    Family('stylegan', 'StyleGAN', stylegan.Generator, stylegan.Discriminator,
           w_space=True, noise=True, grows=True),  # fixed resolution or growing
    Family('stylegan2', 'StyleGAN2', stylegan2.Generator, stylegan2.Discriminator,
           w_space=True, noise=True, grows=False),
    Family('stylegan3', 'StyleGAN3', stylegan3.Generator, stylegan3.Discriminator,
           w_space=True, noise=False, grows=False, input_transform=True,
           synthesis_emas=True),  # D: StyleGAN2's
)}
# name -> (Generator class, Discriminator class).
MODELS = {name: (f.generator, f.discriminator) for name, f in FAMILIES.items()}


@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
  """A built generator's sizes and family."""
  family: Family
  z_dim: int
  c_dim: int
  img_resolution: int
  img_channels: int
  w_dim: Optional[int]  # None: no W space
  num_ws: Optional[int]  # None: no W space


def family(name: str) -> Family:
  """The family registered as `name`; ValueError naming the known ones otherwise."""
  if name not in FAMILIES:
    raise ValueError(f'unknown model {name!r}; known: {sorted(FAMILIES)}')
  return FAMILIES[name]


def family_of(module) -> Family:
  """The family whose Generator or Discriminator `module` is (subclasses count, the nearest
  registered class wins: stylegan's D subclasses progan's)."""
  for cls in type(module).__mro__:
    for f in FAMILIES.values():
      if cls in (f.generator, f.discriminator):
        return f
  raise ValueError(f'{type(module).__name__} belongs to no registered model family '
                   f'({sorted(FAMILIES)})')


def describe(G) -> GeneratorInfo:
  """The sizes of generator G and its family."""
  f = family_of(G)
  return GeneratorInfo(f, G.z_dim, G.c_dim, G.img_resolution, G.img_channels,
                       w_dim=G.w_dim if f.w_space else None,
                       num_ws=G.num_ws if f.w_space else None)


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}


def bf16_resolutions(model_config, backend: Optional[str] = None) -> int:
  """model.num_bf16_res where `backend` (default: JAX's default backend, the one the step is
  compiled for) is one of model.bf16_backends, else 0: bfloat16 only where it is native."""
  backends = [b.strip() for b in model_config.get('bf16_backends', 'cpu,gpu,tpu').split(',')]
  backend = jax.default_backend() if backend is None else backend
  return model_config.get('num_bf16_res', 0) if backend in backends else 0


def build(model_config, img_resolution: int, img_channels: int, c_dim: int,
          backend: Optional[str] = None):
  """(G, D) for `model_config` (a ConfigDict with name, z_dim, w_dim, mapping_layers,
  channel_base, channel_max, conv_clamp (0 or None: off), num_bf16_res and bf16_backends
  (see `bf16_resolutions`; `backend` is the one the models are compiled for), mbstd_group_size
  (0: the whole minibatch), mbstd_num_channels, w_avg_beta (G's tracked-w decay)). Each class gets only the arguments it takes
  (ProGAN's G has no mapping network, so no w_dim, mapping_layers or conv_clamp). What G and D
  can do: `family_of(G)`; their sizes: `describe(G)`."""
  f = family(model_config.name)
  generator_cls, discriminator_cls = f.generator, f.discriminator
  common = dict(img_resolution=img_resolution, img_channels=img_channels, c_dim=c_dim,
                channel_base=model_config.channel_base, channel_max=model_config.channel_max,
                conv_clamp=model_config.conv_clamp or None,
                num_bf16_res=bf16_resolutions(model_config, backend))
  g_kwargs = dict(common, z_dim=model_config.z_dim, w_dim=model_config.w_dim,
                  mapping_layers=model_config.mapping_layers)
  if model_config.get('w_avg_beta') is not None:  # a config.json of before it existed: the default
    g_kwargs['w_avg_beta'] = model_config.w_avg_beta
  for name in ('conv_kernel', 'use_radial_filters', 'magnitude_ema_beta'):  # StyleGAN3's
    if model_config.get(name) is not None:
      g_kwargs[name] = model_config[name]
  for name in ('channel_base', 'channel_max'):  # G's own (StyleGAN3-R doubles G's, not D's)
    if model_config.get(f'g_{name}') is not None:
      g_kwargs[name] = model_config[f'g_{name}']
  d_kwargs = dict(common, mbstd_group_size=model_config.mbstd_group_size or None,
                  mbstd_num_channels=model_config.mbstd_num_channels)
  G = generator_cls(**{k: v for k, v in g_kwargs.items() if k in _fields(generator_cls)})
  D = discriminator_cls(**{k: v for k, v in d_kwargs.items() if k in _fields(discriminator_cls)})
  return G, D
