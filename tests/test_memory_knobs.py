"""The memory knobs of the flagship configs: bfloat16 per backend (model.bf16_backends) and
rematerialisation inside R1 / path length (train.remat) — same numbers as without it."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import config_base
from gan_jax import config_check
from gan_jax import losses
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import train_step as train_step_lib
from gan_jax.models import stylegan2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES, CH = 16, 3


def test_bf16_follows_the_backend_the_step_is_built_for():
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py'))
  assert config.model.num_bf16_res == 4 and config.model.bf16_backends == 'gpu,tpu'
  assert models.bf16_resolutions(config.model, 'tpu') == 4
  assert models.bf16_resolutions(config.model, 'gpu') == 4
  assert models.bf16_resolutions(config.model, 'cpu') == 0
  G, D = models.build(config.model, 1024, 3, 0, backend='tpu')
  assert (G.num_bf16_res, D.num_bf16_res) == (4, 4)
  G, D = models.build(config.model, 1024, 3, 0, backend='cpu')
  assert (G.num_bf16_res, D.num_bf16_res) == (0, 0)
  # Default backend: this process's (the tests run on CPU).
  assert models.bf16_resolutions(config.model) == (4 if jax.default_backend() != 'cpu' else 0)
  # The base config applies num_bf16_res wherever it is asked for (bench/ uses it on CPU).
  base = config_base.get_base_config()
  base.model.num_bf16_res = 2
  assert models.bf16_resolutions(base.model, 'cpu') == 2


def test_knobs_are_validated():
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py:tiny'))
  config_check.validate(config, 1)
  for key, value, words in [('model.bf16_backends', 'tpu,metal', 'cpu'),
                            ('train.remat', 'everything', 'nothing_saveable')]:
    bad = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py:tiny'), {key: value})
    with pytest.raises(config_check.ConfigError, match=words):
      config_check.validate(bad, 1)
  progan = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py:tiny'),
                            {'model.name': 'stylegan', 'train.remat': 'dots_saveable'})
  with pytest.raises(config_check.ConfigError, match='stylegan2 only'):
    config_check.validate(progan, 1)


@pytest.fixture(scope='module')
def nets():
  kw = dict(img_resolution=RES, img_channels=CH, channel_base=256, channel_max=16, conv_clamp=256)
  G = stylegan2.Generator(z_dim=16, w_dim=16, mapping_layers=2, **kw)
  D = stylegan2.Discriminator(**kw)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
  img = jax.random.normal(jax.random.PRNGKey(2), (4, RES, RES, CH))
  gvars = G.init({'params': jax.random.PRNGKey(3)}, z, None)
  dvars = D.init({'params': jax.random.PRNGKey(4)}, img)
  return G, D, z, img, gvars, dvars


def _close(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


# nothing_saveable recomputes everything (the slowest compile here): -m slow; dots_saveable keeps
# remat's gradient check in the default suite.
@pytest.mark.parametrize('policy', [pytest.param('nothing_saveable', marks=pytest.mark.slow),
                                    'dots_saveable'])
def test_remat_gives_the_same_regulariser_gradients(nets, policy):
  G, D, z, img, gvars, dvars = nets

  def r1(params, model):
    return jnp.mean(losses.r1_penalty(lambda x: model.apply({'params': params}, x), img))

  def pl(params, model):
    variables = {'params': params, 'buffers': gvars['buffers']}
    ws = model.apply(variables, z, None, method='map')
    synth = lambda w: model.apply(variables, w, method='synthesize',
                                  rngs={'noise': jax.random.PRNGKey(5)})
    directions = jax.random.normal(jax.random.PRNGKey(6), img.shape)  # N(0, 1), as the step
    return jnp.mean(losses.path_lengths(synth, ws, directions))

  remat_d, remat_g = D.clone(remat=policy), G.clone(remat=policy)
  assert jax.tree_util.tree_structure(remat_d.init(jax.random.PRNGKey(4), img)) == \
      jax.tree_util.tree_structure(dvars)  # same parameter names: checkpoints load either way
  for fn, params, plain, remat in [(r1, dvars['params'], D, remat_d),
                                   (pl, gvars['params'], G, remat_g)]:
    text = lambda model, fn=fn, params=params: str(jax.make_jaxpr(jax.grad(fn),
                                                                  static_argnums=1)(params, model))
    assert 'remat2' in text(remat) and 'remat2' not in text(plain)  # remat is in effect
  _close(jax.jit(jax.grad(r1), static_argnums=1)(dvars['params'], D),
         jax.jit(jax.grad(r1), static_argnums=1)(dvars['params'], remat_d))
  _close(jax.jit(jax.grad(pl), static_argnums=1)(gvars['params'], G),
         jax.jit(jax.grad(pl), static_argnums=1)(gvars['params'], remat_g))
  with pytest.raises(ValueError, match='remat'):
    stylegan2.remat_block(stylegan2.SynthesisBlock, 'everything')


def test_step_config_carries_remat():
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py:tiny'),
                            {'train.remat': 'nothing_saveable'})
  assert train_step_lib.StepConfig.from_config(config, 0).remat == 'nothing_saveable'


def test_remat_train_step_matches_no_remat():
  """One r1_pl step of a tiny StyleGAN2 with and without train.remat: the same new state (the
  optimizers record the last gradient, here the lazy R1 / path-length ones)."""
  m = config_base.get_base_config().model
  m.z_dim = m.w_dim = 8
  m.mapping_layers = 1
  m.channel_base, m.channel_max = 64, 4
  m.mbstd_group_size = 2
  G, D = models.build(m, 8, 1, 0)
  record = optax.GradientTransformation(
      lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
      lambda grads, state, params=None: (jax.tree_util.tree_map(jnp.zeros_like, grads), grads))
  state = state_lib.create(G, D, record, record, 0, jax.random.PRNGKey(3))
  reals = jax.random.uniform(jax.random.PRNGKey(4), (4, 8, 8, 1), minval=-1, maxval=1)
  batch = {'image': reals, 'label': jnp.zeros((4,), jnp.int32)}
  new = {}
  for remat in ('none', 'nothing_saveable'):
    config = config_base.get_base_config()
    config.schedule.batch_size, config.train.remat = 4, remat
    config.loss.r1_interval = config.loss.pl_interval = 2
    cfg = train_step_lib.StepConfig.from_config(config, c_dim=0)
    step = train_step_lib.make_train_step(G, D, record, record, cfg)
    new[remat] = jax.jit(step, static_argnums=(2, 3))(state, batch, True, True)
  assert float(new['none'][1]['loss/D_r1_penalty']) > 0
  _close(new['none'], new['nothing_saveable'])


def test_precision_knobs_do_not_change_the_experiment_identity():
  """A workdir written before bf16_backends existed (or with other precision) still resumes."""
  from gan_jax import workdir  # pylint: disable=g-import-not-at-top
  old = json.loads(config_base.load(os.path.join(ROOT, 'experiments/ffhq.py')).to_json())
  del old['model']['bf16_backends']
  old['model']['num_bf16_res'] = 0
  new = json.loads(config_base.load(os.path.join(ROOT, 'experiments/ffhq.py')).to_json())
  assert workdir.identity_diff(old, new) == []
  new['model']['channel_base'] = 16384
  assert workdir.identity_diff(old, new) == ['model.channel_base: 32768 -> 16384']
