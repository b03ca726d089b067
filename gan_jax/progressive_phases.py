"""The phases of the progressive step (gan_jax/progressive_step.py) as deterministic functions of
the parameters, the stage and the step's random inputs (`StepDraws`).

  D main   'wgan_gp': D(G(z)) - D(x) + lambda * GP + drift * D(x)^2 (ProGAN);
           'nonsaturating': softplus(D(G(z))) + softplus(-D(x)) + gamma / 2 * R1 (StyleGAN).
  G main   -D(G(z)) or softplus(-D(G(z))) on fresh latents.
  G pl     StyleGAN2's path length at the stage (StyleGAN only: it needs the w space).

Everything runs at the stage's resolution and fade-in alpha. With augmentation (config.augment),
every image D sees is augmented with probability ada_p: the fakes of G main and D main and the
reals of D main. R1 is the gradient with respect to the un-augmented reals, through the
augmentation (as NVIDIA's StyleGAN2-ADA). WGAN-GP's interpolates are built from the augmented
reals and fakes, so the penalty holds D 1-Lipschitz where it is evaluated: on what it sees.
Image-space filtering (pipes '...f...') needs images larger than its 43-tap filter's 21-pixel
reflection margin: it is skipped at the stages of 16x16 and below (see `augment_at`).
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gan_jax import augment as augment_lib
from gan_jax import losses
from gan_jax import models
from gan_jax.models import layers
from gan_jax.models import stylegan


class GDraws(NamedTuple):
  """The random inputs of one generator evaluation."""
  z: jax.Array  # (N, z_dim)
  c: jax.Array  # (N, c_dim) one-hot labels
  mix_cutoff: Optional[jax.Array]  # int32 (): ws[:, cutoff:] from mix_z; None: no mixing
  mix_z: Optional[jax.Array]  # (N, z_dim); None: no mixing (ProGAN, or style_mixing_prob 0)
  noise: jax.Array  # PRNG key of the synthesis noise (unused by ProGAN)


class StepDraws(NamedTuple):
  """Every random input of one progressive step."""
  d_main: GDraws  # the fakes D sees (labelled like the reals)
  d_gp: jax.Array  # PRNG key of WGAN-GP's interpolation weights (unused by 'nonsaturating')
  g_main: GDraws
  g_pl: Optional[GDraws]  # path length (do_pl only): batch // pl_batch_shrink samples
  pl_noise: Optional[jax.Array]  # (N_pl, stage, stage, C) N(0, 1): the image-space directions
  aug: jax.Array  # 3 keys: G main fakes, D main fakes, D main reals


def ws_in_use(stage: int) -> int:
  """StyleGAN ws read up to the blocks of `stage`: two per resolution 4..stage."""
  return 2 * layers.log2_resolution(stage) - 2


def augment_at(cfg: Optional[augment_lib.AugmentConfig], resolution: int
               ) -> Optional[augment_lib.AugmentConfig]:
  """The augmentation at a stage resolution: image-space filtering off where the images are not
  larger than the filter bank's reflection margin (21 pixels: stages 4..16), where it cannot run
  (augment.band_filter); every other op works down to 4x4."""
  margin = augment_lib.filter_bank().shape[1] // 2
  if cfg is not None and cfg.imgfilter > 0 and resolution <= margin:
    return cfg._replace(imgfilter=0.0)
  return cfg


class Phases:
  """The loss of each phase; `cfg` is a progressive_step.ProgressiveStepConfig."""

  def __init__(self, G, D, cfg, shard: Callable[[jax.Array], jax.Array] = None):
    self.G, self.D, self.cfg = G, D, cfg
    self.shard = shard or (lambda x: x)
    self.is_style = models.family_of(G).w_space

  def map_ws(self, g_params, g_buffers, d: GDraws, update_w_avg: bool):
    """StyleGAN's mapping with style mixing: (ws, new buffers)."""
    variables = {'params': g_params, 'buffers': g_buffers}
    ws, mutated = self.G.apply(variables, d.z, d.c, update_w_avg=update_w_avg, method='map',
                               mutable=['buffers'])
    if d.mix_z is not None:
      ws = stylegan.mix_styles(ws, self.G.apply(variables, d.mix_z, d.c, method='map'),
                               d.mix_cutoff)
    return ws, mutated['buffers']

  def synth(self, g_params, g_buffers, ws, d: GDraws, stage: int, alpha):
    return self.G.apply({'params': g_params, 'buffers': g_buffers}, ws, method='synthesize',
                        stage=stage, alpha=alpha, rngs={'noise': d.noise})

  def generate(self, g_params, g_buffers, d: GDraws, stage: int, alpha, update_w_avg: bool):
    """(images at the stage resolution, G buffers after the mapping)."""
    if not self.is_style:
      return self.G.apply({'params': g_params}, d.z, d.c, stage=stage, alpha=alpha), g_buffers
    ws, buffers = self.map_ws(g_params, g_buffers, d, update_w_avg)
    return self.synth(g_params, buffers, ws, d, stage, alpha), buffers

  def d_fakes(self, g_params, g_buffers, draws: StepDraws, stage: int, alpha):
    """The fakes of D main: G gets no gradient and its w_avg does not move (it moves in G's
    passes, as the official StyleGAN's)."""
    fakes, _ = self.generate(g_params, g_buffers, draws.d_main, stage, alpha, False)
    return jax.lax.stop_gradient(fakes)

  def scores(self, d_params, images, c, stage: int, alpha):
    return self.D.apply({'params': d_params}, images, c, stage=stage, alpha=alpha)

  def augment(self, images, key, p):
    cfg = augment_at(self.cfg.augment, images.shape[1])
    return images if cfg is None else augment_lib.augment(key, images, p, cfg)

  def d_loss(self, d_params, fakes, draws: StepDraws, reals, ada_p, stage: int, alpha):
    """D main with its penalty in the same update. Returns (loss, (metrics, real scores)).

    R1 differentiates a second forward pass on the reals (as the official StyleGAN's), not the
    scores' own (`losses.logits_and_r1`): the same maths, and the same program as 9ec82d9's step,
    whose 20 recorded steps tests/test_one_loop.py reproduces bit for bit on one machine.
    """
    cfg, c = self.cfg, draws.d_main.c
    score = lambda x: self.scores(d_params, x, c, stage, alpha)
    real_fn = lambda x: score(self.augment(x, draws.aug[2], ada_p))
    reals_seen = self.augment(reals, draws.aug[2], ada_p)
    real_s = score(reals_seen)  # reals first, then fakes: 9ec82d9's order (see above)
    fakes_seen = self.augment(fakes, draws.aug[1], ada_p)
    fake_s = score(fakes_seen)
    if cfg.loss == 'wgan_gp':
      penalty = losses.gradient_penalty(score, reals_seen, fakes_seen, draws.d_gp,
                                        cfg.wgan_target)
      loss = losses.d_wgan_gp(real_s, fake_s, penalty, cfg.wgan_lambda, cfg.wgan_drift)
      name = 'loss/D_gp_penalty'
    else:
      penalty = (losses.r1_penalty(real_fn, reals) if cfg.r1_gamma > 0
                 else jnp.zeros((reals.shape[0],), jnp.float32))
      loss = losses.d_logistic(real_s, fake_s) + cfg.r1_gamma / 2 * jnp.mean(penalty)
      name = 'loss/D_r1_penalty'
    metrics = {'loss/D': loss, 'scores/real': jnp.mean(real_s), 'scores/fake': jnp.mean(fake_s),
               name: jnp.mean(penalty)}
    return loss, (metrics, real_s)

  def g_loss(self, g_params, g_buffers, d_params, draws: StepDraws, pl_mean, ada_p, stage: int,
             alpha, main: bool, pl: bool):
    """G's loss: the adversarial term on fresh fakes (main) and/or path length (pl, weight
    pl_weight * pl_interval). Every G pass moves w_avg. Returns (loss, (buffers, metrics,
    new pl_mean))."""
    cfg, loss, metrics, new_mean, buffers = self.cfg, 0.0, {}, pl_mean, g_buffers
    if main:
      d = draws.g_main
      fakes, buffers = self.generate(g_params, buffers, d, stage, alpha, True)
      s = self.scores(d_params, self.augment(fakes, draws.aug[0], ada_p), d.c, stage, alpha)
      loss = metrics['loss/G'] = (losses.g_wasserstein(s) if cfg.loss == 'wgan_gp'
                                  else losses.g_nonsaturating(s))
    if pl:
      # The stage's synthesis as a function of the ws it reads (the others do not reach its
      # images), so the lengths average over the layers in use, as NVIDIA's at full size.
      d = draws.g_pl
      ws, buffers = self.map_ws(g_params, buffers, d, True)
      used = ws_in_use(stage)
      synth = lambda w: self.synth(g_params, buffers, jnp.concatenate([w, ws[:, used:]], 1), d,
                                   stage, alpha)
      lengths = losses.path_lengths(synth, ws[:, :used], draws.pl_noise)
      penalty, new_mean = losses.path_length_penalty(lengths, pl_mean, cfg.pl_decay)
      loss = loss + jnp.mean(penalty) * cfg.pl_weight * cfg.pl_interval
      metrics['loss/G_pl_penalty'] = jnp.mean(penalty)
      metrics['pl_mean'] = new_mean
    return loss, (buffers, metrics, new_mean)
