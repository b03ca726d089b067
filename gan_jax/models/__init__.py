"""Model registry: name -> (Generator class, Discriminator class), and `build` from a config."""

from gan_jax.models import stylegan
from gan_jax.models import stylegan2

MODELS = {
    'stylegan': (stylegan.Generator, stylegan.Discriminator),  # fixed resolution (stage None)
    'stylegan2': (stylegan2.Generator, stylegan2.Discriminator),
}


def build(model_config, img_resolution: int, img_channels: int, c_dim: int):
  """(G, D) for `model_config` (a ConfigDict with name, z_dim, w_dim, mapping_layers,
  channel_base, channel_max, conv_clamp (0 or None: off), num_bf16_res, mbstd_group_size,
  mbstd_num_channels)."""
  if model_config.name not in MODELS:
    raise ValueError(f'unknown model {model_config.name!r}; known: {sorted(MODELS)}')
  generator_cls, discriminator_cls = MODELS[model_config.name]
  conv_clamp = model_config.conv_clamp or None
  common = dict(img_resolution=img_resolution, img_channels=img_channels, c_dim=c_dim,
                channel_base=model_config.channel_base, channel_max=model_config.channel_max,
                conv_clamp=conv_clamp, num_bf16_res=model_config.get('num_bf16_res', 0))
  G = generator_cls(z_dim=model_config.z_dim, w_dim=model_config.w_dim,
                    mapping_layers=model_config.mapping_layers, **common)
  D = discriminator_cls(mbstd_group_size=model_config.mbstd_group_size,
                        mbstd_num_channels=model_config.mbstd_num_channels, **common)
  return G, D
