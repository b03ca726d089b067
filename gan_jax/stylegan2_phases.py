"""The phases of StyleGAN2's train step (gan_jax/train_step.py) as functions of the parameters and
the step's random inputs: NVIDIA's StyleGAN2Loss.accumulate_gradients, phase by phase (G main,
G path length, D main, D R1), with ADA's augmentation of what D sees and StyleGAN3's blur of
it."""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import augment as augment_lib
from gan_jax import losses
from gan_jax import models


def blur_sigma(nimg: jax.Array, cfg) -> jax.Array:
  """NVIDIA's StyleGAN3 loss: max(1 - nimg / (blur_fade_kimg * 1000), 0) * blur_init_sigma
  (0 when blur_fade_kimg is 0); nimg the images shown before this step."""
  if cfg.blur_init_sigma <= 0 or cfg.blur_fade_kimg <= 0:
    return jnp.float32(0.0)
  return jnp.maximum(1 - nimg / np.float32(cfg.blur_fade_kimg * 1e3), 0) * np.float32(
      cfg.blur_init_sigma)


def blur(images: jax.Array, sigma: jax.Array, max_sigma: float) -> jax.Array:
  """NVIDIA's run_D blur: the separable filter f(x) = 2^-(x / sigma)^2 on the taps
  |x| <= floor(3 sigma), normalised to sum 1, applied to both axes of images (N, H, W, C) with
  zero padding, size kept; the identity while floor(3 sigma) is 0. `sigma` may be traced; the
  filter is laid out for `max_sigma` (static), its outer taps zero while sigma is smaller."""
  radius = int(math.floor(3 * max_sigma))
  if radius == 0:
    return images
  sigma = jax.lax.stop_gradient(jnp.asarray(sigma, jnp.float32))
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  safe = jnp.maximum(sigma, 1e-3)
  f = jnp.where(jnp.abs(x) <= jnp.floor(3 * sigma), jnp.exp2(-jnp.square(x / safe)), 0.0)
  f = jnp.where(x == 0, 1.0, f)  # taps beyond floor(3 sigma) are 0; the centre 2^0 = 1
  f = (f / jnp.sum(f)).astype(images.dtype)
  ch = images.shape[-1]
  for shape in ((2 * radius + 1, 1), (1, 2 * radius + 1)):
    kernel = jnp.tile(f.reshape(shape + (1, 1)), (1, 1, 1, ch))
    images = jax.lax.conv_general_dilated(
        images, kernel, (1, 1), ((shape[0] // 2,) * 2, (shape[1] // 2,) * 2),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=ch,
        precision=jax.lax.Precision.HIGHEST)
  return images


class GDraws(NamedTuple):
  """The random inputs of one generator evaluation (NVIDIA's run_G)."""
  z: jax.Array  # (N, z_dim)
  c: jax.Array  # (N, c_dim) labels
  mix_cutoff: jax.Array  # int32 (): ws[:, cutoff:] come from mix_z (num_ws: no mixing)
  mix_z: Optional[jax.Array]  # (N, z_dim); None when style mixing is off
  noise: jax.Array  # PRNG key of the synthesis noise inputs (noise_mode 'random')


class StepDraws(NamedTuple):
  """Every random input of one train step, so that the phases are deterministic functions."""
  g_main: GDraws
  g_pl: Optional[GDraws]  # path length (do_pl only): batch_size // pl_batch_shrink samples
  pl_noise: Optional[jax.Array]  # (N_pl, H, W, C) N(0, 1): the path length's image directions
  d_main: GDraws  # the fakes D sees
  aug: jax.Array  # 4 keys: G main fakes, D main fakes, D main reals, R1 reals


class Phases:
  """The loss of each phase as a function of the parameters and the step's random inputs
  (NVIDIA's StyleGAN2Loss.accumulate_gradients): differentiate them and apply `apply_update`.

  `cfg` is the step's train_step.StepConfig. `noise_mode` of the synthesis network: 'random' (training: fresh noise from the draws' keys)
  or 'const' (the stored noise_const maps; reproducible, for comparisons with NVIDIA's code).
  """

  def __init__(self, G, D, cfg, shard: Callable[[jax.Array], jax.Array] = None,
               noise_mode: str = 'random'):
    self.G, self.D, self.cfg, self.noise_mode = G, D, cfg, noise_mode
    self.family = models.family_of(G)
    self.shard = shard or (lambda x: x)
    # config.train.remat: path length and R1 differentiate twice through G / D; these copies
    # (same parameters) checkpoint every block, so the double backward keeps the block inputs only.
    self.G_reg = G if cfg.remat == 'none' else G.clone(remat=cfg.remat)
    self.D_reg = D if cfg.remat == 'none' else D.clone(remat=cfg.remat)

  def map_ws(self, g_params, g_buffers, d: GDraws, update_w_avg: bool):
    """Mapping with style mixing; returns (ws, new buffers)."""
    G, variables = self.G, {'params': g_params, 'buffers': g_buffers}
    ws, mutated = G.apply(variables, d.z, d.c, update_w_avg=update_w_avg, method='map',
                          mutable=['buffers'])
    if d.mix_z is not None:
      ws2 = G.apply(variables, d.mix_z, d.c, method='map')
      mix = (jnp.arange(ws.shape[1]) >= d.mix_cutoff)[None, :, None]
      ws = jnp.where(mix, ws2, ws)
    return ws, mutated['buffers']

  def synth(self, g_params, g_buffers, ws, d: GDraws, G=None):
    return (G or self.G).apply({'params': g_params, 'buffers': g_buffers}, ws,
                               method='synthesize', rngs={'noise': d.noise},
                               **self.family.noise_kwargs(self.noise_mode))

  def run_g(self, g_params, g_buffers, d: GDraws, update_w_avg: bool):
    """(images, new buffers) of one generator evaluation."""
    ws, buffers = self.map_ws(g_params, g_buffers, d, update_w_avg)
    return self.synth(g_params, buffers, ws, d), buffers

  def d_fakes(self, g_params, g_buffers, draws: StepDraws):
    """(fakes for D's phases, new G buffers): G gets no gradient from D's loss."""
    if not self.family.synthesis_emas:
      fakes, buffers = self.run_g(g_params, g_buffers, draws.d_main, update_w_avg=True)
      return jax.lax.stop_gradient(fakes), buffers
    # StyleGAN3: these fakes also move the synthesis layers' magnitude EMAs, and are the only
    # ones to move w_avg (NVIDIA's Dmain run_G(update_emas=True); `g_loss`).
    ws, buffers = self.map_ws(g_params, g_buffers, draws.d_main, update_w_avg=True)
    fakes, mutated = self.G.apply({'params': g_params, 'buffers': buffers}, ws,
                                  method='synthesize', update_emas=True, mutable=['buffers'])
    return jax.lax.stop_gradient(fakes), mutated['buffers']

  def d_logits(self, d_params, images, c, D=None):
    return (D or self.D).apply({'params': d_params}, images, c)

  def augment(self, images, key, p, blur_sigma=0.0):
    """What D sees: the blurred (StyleGAN3's blur, when configured), then augmented images."""
    if self.cfg.blur_init_sigma > 0:
      images = blur(images, blur_sigma, self.cfg.blur_init_sigma)
    if self.cfg.augment is None:
      return images
    return augment_lib.augment(key, images, p, self.cfg.augment)

  def g_loss(self, g_params, g_buffers, d_params, draws: StepDraws, pl_mean, ada_p, main: bool,
             pl: bool, blur_sigma=0.0):
    """G's loss: non-saturating on fresh fakes (main) and/or path length (pl, gain
    pl_interval); D sees the fakes blurred by `blur_sigma` (`blur`, when the config blurs).
    Returns (loss, (new buffers, metrics, new pl_mean))."""
    cfg, loss, metrics, new_mean = self.cfg, 0.0, {}, pl_mean
    buffers = g_buffers
    # As NVIDIA's StyleGAN2(-ADA) mapping in train mode, every G evaluation moves w_avg toward its
    # batch's mean w (before mixing): G main, path length, and D main's fakes (`d_fakes`).
    # NVIDIA's StyleGAN3 loss moves w_avg, as the magnitude EMAs, with D main's fakes only
    # (run_G(update_emas=True) there alone): so do the families with synthesis EMAs.
    update = not self.family.synthesis_emas
    if main:
      fakes, buffers = self.run_g(g_params, buffers, draws.g_main, update_w_avg=update)
      fakes = self.augment(fakes, draws.aug[0], ada_p, blur_sigma)
      fake_logits = self.d_logits(d_params, fakes, draws.g_main.c)
      loss = metrics['loss/G'] = losses.g_nonsaturating(fake_logits)
    if pl:
      d = draws.g_pl
      ws, buffers = self.map_ws(g_params, buffers, d, update_w_avg=update)
      lengths = losses.path_lengths(lambda w: self.synth(g_params, buffers, w, d, self.G_reg),
                                    ws, draws.pl_noise)
      penalty, new_mean = losses.path_length_penalty(lengths, pl_mean, cfg.pl_decay)
      loss = loss + jnp.mean(penalty) * cfg.pl_weight * cfg.pl_interval
      metrics['loss/G_pl_penalty'] = jnp.mean(penalty)
      metrics['pl_mean'] = new_mean
    return loss, (buffers, metrics, new_mean)

  def d_loss(self, d_params, fakes, draws: StepDraws, reals, c_real, ada_p, main: bool, r1: bool,
             blur_sigma=0.0):
    """D's loss: logistic on reals and fakes (main) and/or R1 on the reals (r1, weight gamma / 2,
    gain r1_interval; the gradient with respect to the un-augmented reals). With both, the two
    come from one forward pass on the reals. Returns (loss, (metrics, real logits))."""
    cfg, loss, metrics = self.cfg, 0.0, {}
    if main:
      fake_logits = self.d_logits(d_params, self.augment(fakes, draws.aug[1], ada_p, blur_sigma),
                                  draws.d_main.c)
    aug_key = draws.aug[3] if r1 else draws.aug[2]
    real_fn = lambda x: self.d_logits(d_params, self.augment(x, aug_key, ada_p, blur_sigma), c_real,
                                      self.D_reg if r1 else self.D)
    if r1:
      real_logits, penalty = losses.logits_and_r1(real_fn, reals)
      metrics['loss/D_r1_penalty'] = jnp.mean(penalty)
    else:
      real_logits = real_fn(reals)
    if main:
      loss = losses.d_logistic(real_logits, fake_logits)
      metrics.update({'loss/D': loss, 'scores/fake': jnp.mean(fake_logits)})
    if r1:
      loss = loss + jnp.mean(penalty) * (cfg.r1_gamma / 2) * cfg.r1_interval
    return loss, (metrics, real_logits)
