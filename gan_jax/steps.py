"""The registry of train steps: which step module trains a config.

  'stylegan2'      NVIDIA's StyleGAN2(-ADA) step (gan_jax/train_step.py): non-saturating logistic
                   loss, lazy R1 and path length as their own optimizer steps, style mixing, ADA;
                   one stage at the model's resolution.
  'nonsaturating'  StyleGAN's step as in its paper (gan_jax/progressive_step.py): D then G,
                   logistic loss with R1 in every D step; trains growing networks stage by stage.
  'wgan_gp'        ProGAN's step (gan_jax/progressive_step.py): WGAN-GP with drift.
  'encoder'        an image encoder into a frozen G's W+ (gan_jax/encoder_step.py; the encoder
                   sits in D's slot of the state, G comes from config.init.source).

The key is config.loss.name. Every entry is a pure
`make_step(G, D, config, c_dim, batch_sharding) -> step_common.Step`.
"""

from typing import Callable, Optional

import jax

from gan_jax import encoder_step
from gan_jax import progressive_step
from gan_jax import step_common
from gan_jax import train_step

MakeStep = Callable[..., step_common.Step]


REGISTRY: dict[str, MakeStep] = {
    'stylegan2': train_step.make_step,
    'nonsaturating': progressive_step.make_step,
    'wgan_gp': progressive_step.make_step,
    'encoder': encoder_step.make_step,
}


def name_for(config) -> str:
  """The registry key of the step that trains `config`: config.loss.name."""
  return config.loss.name


def make(config, G, D, c_dim: int,
         batch_sharding: Optional[jax.sharding.Sharding] = None) -> step_common.Step:
  """The Step for `config` (its loss picks the registry entry)."""
  name = name_for(config)
  if name not in REGISTRY:
    raise ValueError(f'config.loss.name={name!r} names no train step; known: '
                     f'{", ".join(sorted(REGISTRY))}')
  return REGISTRY[name](G, D, config, c_dim, batch_sharding)
