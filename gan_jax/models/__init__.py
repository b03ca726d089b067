"""Model registry: name -> (Generator class, Discriminator class), and `build` from a config."""

import dataclasses
from typing import Optional

import jax

from gan_jax.models import progan
from gan_jax.models import stylegan
from gan_jax.models import stylegan2

MODELS = {
    'progan': (progan.Generator, progan.Discriminator),  # grows: trained by train_progressive
    'stylegan': (stylegan.Generator, stylegan.Discriminator),  # fixed resolution or growing
    'stylegan2': (stylegan2.Generator, stylegan2.Discriminator),
}


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
  (0: the whole minibatch), mbstd_num_channels). Each class gets only the arguments it takes
  (ProGAN's G has no mapping network, so no w_dim, mapping_layers or conv_clamp)."""
  if model_config.name not in MODELS:
    raise ValueError(f'unknown model {model_config.name!r}; known: {sorted(MODELS)}')
  generator_cls, discriminator_cls = MODELS[model_config.name]
  common = dict(img_resolution=img_resolution, img_channels=img_channels, c_dim=c_dim,
                channel_base=model_config.channel_base, channel_max=model_config.channel_max,
                conv_clamp=model_config.conv_clamp or None,
                num_bf16_res=bf16_resolutions(model_config, backend))
  g_kwargs = dict(common, z_dim=model_config.z_dim, w_dim=model_config.w_dim,
                  mapping_layers=model_config.mapping_layers)
  d_kwargs = dict(common, mbstd_group_size=model_config.mbstd_group_size or None,
                  mbstd_num_channels=model_config.mbstd_num_channels)
  G = generator_cls(**{k: v for k, v in g_kwargs.items() if k in _fields(generator_cls)})
  D = discriminator_cls(**{k: v for k, v in d_kwargs.items() if k in _fields(discriminator_cls)})
  return G, D
