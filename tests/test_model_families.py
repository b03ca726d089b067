"""`gan_jax.models` families: the facts each `Family` states hold for the networks `build` makes
(checked on abstract shapes only, nothing compiled), and `family_of` / `describe`."""

import inspect

import jax
import ml_collections
import numpy as np
import pytest

from gan_jax import models

TINY = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8, conv_clamp=0,
            num_bf16_res=0, mbstd_group_size=2, mbstd_num_channels=1)


def _build(name: str, resolution: int = 8, c_dim: int = 0):
  return models.build(ml_collections.ConfigDict(dict(TINY, name=name)), resolution, 1, c_dim)


def _abstract_init(G, **kwargs):
  z, c = np.zeros((2, G.z_dim), np.float32), np.zeros((2, G.c_dim), np.float32)
  return jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), z, c, **kwargs))


@pytest.mark.parametrize('name', sorted(models.FAMILIES))
def test_each_family_does_what_it_states(name):
  family = models.FAMILIES[name]
  G, D = _build(name)
  assert models.family_of(G) is family and models.family_of(D) is family
  assert type(G) is family.generator and type(D) is family.discriminator
  variables = _abstract_init(G, **family.noise_kwargs('const'))
  info = models.describe(G)
  assert (info.family, info.z_dim, info.c_dim, info.img_resolution, info.img_channels) == (
      family, 8, 0, 8, 1)
  if family.w_space:
    # 2 * log2(8) - 2; StyleGAN3: num_layers (14) + 2 whatever the resolution.
    assert info.w_dim == 8 and info.num_ws == G.num_ws == (16 if name == 'stylegan3' else 4)
    assert 'w_avg' in variables['buffers']['mapping']
    ws = jax.eval_shape(lambda v: G.apply(v, np.zeros((2, 8), np.float32), None, method='map'),
                        variables)
    assert ws.shape == (2, G.num_ws, 8)
  else:
    assert info.w_dim is None and info.num_ws is None and 'buffers' not in variables
    assert not hasattr(G, 'map')
  call = inspect.signature(family.generator.__call__).parameters
  assert ('noise_mode' in call) == family.noise
  assert family.noise_kwargs('random') == ({'noise_mode': 'random'} if family.noise else {})
  for cls in (family.generator, family.discriminator):
    params = inspect.signature(cls.__call__).parameters
    assert ('stage' in params and 'alpha' in params) == family.grows, cls
  if family.grows:  # half resolution at stage 4
    images = jax.eval_shape(lambda v: G.apply(v, np.zeros((2, 8), np.float32), None, stage=4,
                                              alpha=0.5, **family.noise_kwargs('const')),
                            variables)
    assert images.shape == (2, 4, 4, 1)


def test_lookup_by_name_and_by_module():
  assert models.family('progan').title == 'ProGAN'
  with pytest.raises(ValueError, match="unknown model 'biggan'; known: .*'stylegan2'"):
    models.family('biggan')
  with pytest.raises(ValueError, match="unknown model 'biggan'"):
    _build('biggan')
  assert models.MODELS['stylegan'] == (models.FAMILIES['stylegan'].generator,
                                      models.FAMILIES['stylegan'].discriminator)

  class Subclassed(models.FAMILIES['stylegan2'].generator):
    pass

  assert models.family_of(Subclassed(img_resolution=8, img_channels=1)).name == 'stylegan2'
  # stylegan's D subclasses progan's: the nearest registered class wins.
  assert models.family_of(_build('stylegan')[1]).name == 'stylegan'
  with pytest.raises(ValueError, match='int belongs to no registered model family'):
    models.family_of(3)
