"""The encoder's train step (config.loss.name='encoder'): pSp / e4e training with G frozen.

An encoder run is an ordinary run of the one training loop (gan_jax.train): same config system,
mesh and shardings, checkpoints, resume, non-finite guard and preemption. It keeps the GANState
and puts the networks in its slots:

  state.d_params, state.d_opt     the ENCODER (gan_jax.models.encoder) and its Adam state
  state.g_params, ema_params,     the frozen generator, from config.init.source (required);
  g_buffers, ema_buffers          g_tx is optax.set_to_zero: nothing of G ever moves

so "in an encoder run, state.d_params is the encoder". Each step encodes the degraded input
(gan_jax.degradations, config.encoder.degradations), renders ws = w_avg + E(input) with G_ema
and its stored noise maps, and takes one Adam step on

  pixel_weight * MSE(G(ws), clean) + perceptual_weight * LPIPS-style Inception distance
  (gan_jax.tools.perceptual) + w_reg_weight * mean(E(input)^2)   (the pull toward w_avg)

Training images (config.encoder.images): 'reals', the dataset's batch, or 'generated', G_ema's
samples of random z (labels drawn from the batch's, for a conditional G); class:A>B always
trains on generated pairs G(z, A) -> G(z, B). The sample grid of an encoder run shows, for the
reals of step 0, triplets input | reconstruction | clean (`Step.preview`).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax import degradations as degradations_lib
from gan_jax import models
from gan_jax import step_common
from gan_jax.tools import perceptual

IMAGES = ('reals', 'generated')


class Losses:
  """The encoder's loss terms for one generator (pure functions of arrays)."""

  def __init__(self, G, E, encoder_config):
    self.G, self.E, self.cfg = G, E, encoder_config
    self.family = models.family_of(G)
    self.inception = (perceptual.inception.load_params()
                      if encoder_config.perceptual_weight > 0 else None)

  def synthesize(self, params, buffers, ws):
    return self.G.apply({'params': params, 'buffers': buffers}, ws, method='synthesize',
                        **self.family.noise_kwargs('const'))

  def encode(self, e_params, buffers, images):
    """(ws, offsets) for images."""
    offsets = self.E.apply({'params': e_params}, images)
    return buffers['mapping']['w_avg'] + offsets, offsets

  def __call__(self, e_params, params, buffers, inputs, targets):
    ws, offsets = self.encode(e_params, buffers, inputs)
    out = self.synthesize(params, buffers, ws)
    terms = {'pixel': jnp.mean(jnp.square(out - targets)),
             'w_reg': jnp.mean(jnp.square(offsets))}
    total = self.cfg.pixel_weight * terms['pixel'] + self.cfg.w_reg_weight * terms['w_reg']
    if self.inception is not None:
      taps = lambda x: perceptual.inception_taps(self.inception, x)
      terms['perceptual'] = jnp.mean(perceptual.tap_distance(
          taps(out), jax.lax.stop_gradient(taps(targets))))
      total = total + self.cfg.perceptual_weight * terms['perceptual']
    return total, terms


def training_pair(losses: Losses, state, batch: dict, key, degradations, c_dim: int,
                  images: str):
  """(encoder input, clean target) of one step."""
  G, family = losses.G, losses.family
  params, buffers = state.ema_params, state.ema_buffers
  n = batch['image'].shape[0]
  pair = degradations_lib.class_pair(degradations)

  def sample(z, c):
    ws = G.apply({'params': params, 'buffers': buffers}, z, c, method='map')
    return losses.synthesize(params, buffers, ws)

  if pair is not None or images == 'generated':
    z = jax.random.normal(step_common.phase_key(key, 'g_main'), (n, G.z_dim))
    if pair is not None:
      one_hot = lambda k: jnp.broadcast_to(jax.nn.one_hot(k, c_dim), (n, c_dim))
      return sample(z, one_hot(pair.source)), sample(z, one_hot(pair.target))
    c = step_common.fake_labels(step_common.phase_key(key, 'd_main'), batch['label'], c_dim)
    targets = sample(z, c)
  else:
    targets = batch['image']
  return degradations_lib.apply(targets, degradations,
                                step_common.phase_key(key, 'augment')), targets


def make_step(G, E, config, c_dim: int,
              batch_sharding: Optional[jax.sharding.Sharding] = None) -> step_common.Step:
  """The registry's Step of an encoder run (E: gan_jax.models.encoder.Encoder in D's slot)."""
  cfg = config.encoder
  if cfg.images not in IMAGES:
    raise ValueError(f'config.encoder.images={cfg.images!r}: one of {IMAGES}')
  degradations = degradations_lib.parse(cfg.degradations, G.img_resolution, c_dim)
  losses = Losses(G, E, cfg)
  d_tx = optax.adam(cfg.lr, b1=0.9, b2=0.999)
  g_tx = optax.set_to_zero()  # G is frozen
  shard = step_common.batch_constraint(batch_sharding)

  def fn(state, batch, alpha, nimg, resolution, variant):
    del alpha, nimg, resolution, variant  # one fixed-resolution variant
    key = step_common.step_key(state.rng, state.step)
    inputs, targets = training_pair(losses, state, batch, key, degradations, c_dim, cfg.images)
    inputs, targets = shard(jax.lax.stop_gradient(inputs)), shard(jax.lax.stop_gradient(targets))
    (total, terms), grads = jax.value_and_grad(losses, has_aux=True)(
        state.d_params, state.ema_params, state.ema_buffers, inputs, targets)
    d_params, d_opt = step_common.apply_update(d_tx, grads, state.d_opt, state.d_params)
    metrics = {'loss/E': total, **{f'loss/E_{k}': v for k, v in terms.items()},
               'psnr': psnr(terms['pixel'])}
    metrics['nonfinite'] = step_common.nonfinite([total, d_params])
    return state.replace(step=state.step + 1, d_params=d_params, d_opt=d_opt), metrics

  preview = make_preview(losses, degradations, config.seed, batch_sharding)
  return step_common.Step('encoder', g_tx, d_tx, fn, variant=lambda step: (),
                          variant_names=lambda variant: 'encoder', reachable=((),),
                          preview=preview)


def psnr(mse: jax.Array) -> jax.Array:
  """PSNR in dB of a mean squared error on [-1, 1] images (peak-to-peak 2)."""
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


def make_preview(losses: Losses, degradations, seed: int,
                 batch_sharding: Optional[jax.sharding.Sharding]):
  """(state, reals (N, H, W, C) float) -> (images, cols): triplets input | reconstruction |
  clean, 4 triplets per row (a class:A>B run shows the real as its own input: a translation)."""
  key = jax.random.PRNGKey(seed)
  kwargs = {} if batch_sharding is None else {
      'out_shardings': jax.sharding.NamedSharding(batch_sharding.mesh,
                                                  jax.sharding.PartitionSpec())}

  def reconstruct(e_params, params, buffers, reals):
    inputs = degradations_lib.apply(reals, degradations, key)
    ws, _ = losses.encode(e_params, buffers, inputs)
    out = losses.synthesize(params, buffers, ws)
    return jnp.stack([inputs, out, reals], axis=1).reshape((-1,) + reals.shape[1:])

  jitted = jax.jit(reconstruct, **kwargs)

  def preview(state, reals):
    reals = np.asarray(reals, np.float32)[:16]
    return jitted(state.d_params, state.ema_params, state.ema_buffers, reals), 12
  return preview
