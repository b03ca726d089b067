"""The pure train step of progressive growing (ProGAN, and StyleGAN trained as in its paper).

One call processes one minibatch at one stage of the growing schedule (`gan_jax.schedule`; a
fixed-resolution run is its one stage). The phases (gan_jax/progressive_phases.py), in the order
of the official ProGAN and StyleGAN training loops:

  D main: reals brought to the stage resolution and blended during the fade-in
          (`layers.real_images_at`) against fakes of the current G, one Adam step on
            'wgan_gp'        D(G(z)) - D(x) + lambda * GP + drift * D(x)^2          (ProGAN)
            'nonsaturating'  softplus(D(G(z))) + softplus(-D(x)) + gamma / 2 * R1   (StyleGAN)
          R1 / GP run in every D step (r1_interval 1: D's optimizer is plain Adam).
  G main: fresh latents against the updated D, -D(G(z)) or softplus(-D(G(z))); StyleGAN's G
          tracks w_avg and mixes styles among the ws the stage reads.
  G pl:   StyleGAN only (w space), every pl_interval steps (the static variant `(do_pl,)`):
          StyleGAN2's path length at the stage, as its own lazy G update (weight
          pl_weight * pl_interval, G's Adam lazy: `optim.make_optimizers`); with interval 1 it
          joins G main's update. pl_mean (the state's) carries over from stage to stage.
  EMA:    G_ema with half-life config.ema.kimg in images, so it does not depend on the batch.

With config.augment.pipe, D sees augmented images with probability state.ada_p, which ADA moves
from the sign of D's scores on the reals (`augment.ada_update`), as in gan_jax/train_step.py.
For WGAN-GP that sign is the critic's, whose scores the drift term keeps near 0, so the heuristic
reads the same way (reals scored above 0 more often than the target: augment more); NVIDIA tuned
its target 0.6 for the logistic loss only, and nobody has tuned one for ProGAN.

Random draws (`StepDraws`, `draw`) come from one key per named phase
(`step_common.phase_key(step_key, 'd_main' | 'd_gp' | 'g_main' | 'g_pl' | 'augment')`), so one
phase's draws do not move with whether path length is due; tests feed their own draws. With the
conditional models, the fakes of D main carry the reals' labels (as ProGAN's code does, which keeps
the gradient penalty's interpolates labelled); G's passes draw labels from the batch.

`stage` and `do_pl` are static: one compiled executable per (stage, do_pl), whose batch size the
schedule fixes. `alpha` (the fade-in, float32) and `nimg` (images shown before this step, int32,
for the EMA ramp-up) are traced inputs, so nothing recompiles while they move.
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gan_jax import augment as augment_lib
from gan_jax import images as images_lib
from gan_jax import models
from gan_jax import optim
from gan_jax import progressive_phases
from gan_jax import step_common
from gan_jax.models import layers
from gan_jax.state import GANState

LOSSES = ('nonsaturating', 'wgan_gp')
VARIANT_NAMES = {(False,): 'plain', (True,): 'pl'}
GDraws, StepDraws, Phases = (progressive_phases.GDraws, progressive_phases.StepDraws,
                             progressive_phases.Phases)
ws_in_use = progressive_phases.ws_in_use


class ProgressiveStepConfig(NamedTuple):
  """The static numbers the step needs (from config.train, config.augment and the data)."""
  c_dim: int
  loss: str = 'wgan_gp'
  r1_gamma: float = 10.0
  wgan_lambda: float = 10.0
  wgan_target: float = 1.0
  wgan_drift: float = 0.001
  style_mixing_prob: float = 0.9
  ema_kimg: float = 10.0
  ema_rampup: float = 0.0
  pl_weight: float = 0.0  # 0: no path length
  pl_interval: int = 4
  pl_decay: float = 0.01
  pl_batch_shrink: int = 2
  augment: Optional[augment_lib.AugmentConfig] = None  # None: D sees the images as they are
  ada_target: Optional[float] = None  # None: ada_p stays fixed
  ada_interval: int = 4
  ada_kimg: float = 500.0

  @classmethod
  def from_config(cls, config, c_dim: int) -> 'ProgressiveStepConfig':
    """From config.loss (name and weights), config.ema and config.augment."""
    l, a, aug = config.loss, config.augment, {}
    if a.pipe != 'none':
      aug = dict(augment=augment_lib.preset(a.pipe), ada_target=a.target,
                 ada_interval=a.interval, ada_kimg=a.ada_kimg)
    return cls(c_dim, l.name, l.r1_gamma, l.wgan_lambda, l.wgan_target, l.wgan_drift,
               l.style_mixing_prob, config.ema.kimg, config.ema.rampup, l.pl_weight,
               l.pl_interval, l.pl_decay, l.pl_batch_shrink, **aug)

  def reachable(self) -> tuple[tuple[bool], ...]:
    """The variants a run meets, heaviest (step 0's, path length due) first."""
    return tuple(v for v in ((True,), (False,))
                 if v in {self.variant(s) for s in range(max(self.pl_interval, 1))})

  def variant(self, step: int) -> tuple[bool]:
    """(do_pl,) for a host-side step counter."""
    return (self.pl_interval > 0 and self.pl_weight > 0 and step % self.pl_interval == 0,)


def make_optimizers(config):
  """(G Adam, D Adam) of config.optim (`optim.make_optimizers`: G lazy for path length, D not
  lazy: its penalty runs in every D step)."""
  return optim.make_optimizers(config, lazy_d=False)


def ema_beta(batch_size: int, nimg: jax.Array, cfg: ProgressiveStepConfig) -> jax.Array:
  """`step_common.ema_beta` with the config's half-life and ramp-up."""
  return step_common.ema_beta(batch_size, nimg, cfg.ema_kimg, cfg.ema_rampup)


def draw(key: jax.Array, G, cfg: ProgressiveStepConfig, labels: jax.Array, stage: int,
         do_pl: bool, shard: Callable[[jax.Array], jax.Array] = lambda x: x) -> StepDraws:
  """The step's random inputs from its key (step_common.step_key), one key per named phase.

  Style mixing (StyleGAN) with probability style_mixing_prob, the crossover uniform among the
  layers the stage reads (the official code's cur_layers), so a mixed minibatch always mixes
  something visible.
  """
  n, is_style = labels.shape[0], models.family_of(G).w_space
  c_real = step_common.real_labels(labels, cfg.c_dim)

  def g_draws(phase_key, num, c=None):
    k_z, k_c, k_mix, k_noise = jax.random.split(phase_key, 4)
    z = shard(jax.random.normal(k_z, (num, G.z_dim)))
    c = step_common.fake_labels(k_c, labels, cfg.c_dim)[:num] if c is None else c
    cutoff = mix_z = None
    if is_style and cfg.style_mixing_prob > 0:
      k_cut, k_prob, k_mz = jax.random.split(k_mix, 3)
      cutoff = jax.random.randint(k_cut, (), 1, ws_in_use(stage))
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff,
                         G.num_ws)
      mix_z = shard(jax.random.normal(k_mz, z.shape, z.dtype))
    return GDraws(z, c, cutoff, mix_z, k_noise)

  d_main = g_draws(step_common.phase_key(key, 'd_main'), n, c_real)
  g_main = g_draws(step_common.phase_key(key, 'g_main'), n)
  g_pl = pl_noise = None
  if do_pl:
    k_g, k_dir = jax.random.split(step_common.phase_key(key, 'g_pl'))
    g_pl = g_draws(k_g, max(n // cfg.pl_batch_shrink, 1))
    pl_noise = jax.random.normal(k_dir, (g_pl.z.shape[0], stage, stage, G.img_channels))
  aug = jax.random.split(step_common.phase_key(key, 'augment'), 3)
  return StepDraws(d_main, step_common.phase_key(key, 'd_gp'), g_main, g_pl, pl_noise, aug)


def make_progressive_step(G, D, g_tx: optax.GradientTransformation,
                          d_tx: optax.GradientTransformation, cfg: ProgressiveStepConfig,
                          batch_sharding: Optional[jax.sharding.Sharding] = None
                          ) -> Callable[..., tuple[GANState, dict]]:
  """Returns `step(state, batch, alpha, nimg, stage, do_pl, draws=None) -> (state, metrics)`;
  jit it with `stage` and `do_pl` static (`jit_progressive_step`). `batch` is {'image':
  (N, stage, stage, C) in [-1, 1] (the reals box-filtered to the stage resolution), 'label': (N,)
  int32}; `draws` (a StepDraws) replaces the draws of fold_in(state.rng, state.step)."""
  if cfg.loss not in LOSSES:
    raise ValueError(f'loss must be one of {LOSSES}, got {cfg.loss!r}')
  if cfg.pl_weight > 0 and not models.family_of(G).w_space:
    raise ValueError(f'path length (pl_weight={cfg.pl_weight}) needs a generator with a w space; '
                     f'{models.family_of(G).title} has none')
  shard = step_common.batch_constraint(batch_sharding)
  phases = Phases(G, D, cfg, shard)

  def step(state: GANState, batch: dict, alpha: jax.Array, nimg: jax.Array, stage: int,
           do_pl: bool = False, draws: Optional[StepDraws] = None):
    alpha = jnp.asarray(alpha, jnp.float32)
    n = batch['image'].shape[0]
    if batch['image'].shape[1:3] != (stage, stage):
      raise ValueError(f'the batch holds {batch["image"].shape[1:3]} images; stage {stage} needs '
                       f'them box-filtered to {stage}x{stage} first')
    if draws is None:
      draws = draw(step_common.step_key(state.rng, state.step), G, cfg, batch['label'], stage,
                   do_pl, shard)
    reals = layers.real_images_at(batch['image'], stage, alpha)

    # --- D main: reals against fakes of the current G, with R1 or GP + drift.
    fakes = phases.d_fakes(state.g_params, state.g_buffers, draws, stage, alpha)
    (_, (metrics, real_s)), grads = jax.value_and_grad(phases.d_loss, has_aux=True)(
        state.d_params, fakes, draws, reals, state.ada_p, stage, alpha)
    d_params, d_opt = step_common.apply_update(d_tx, grads, state.d_opt, state.d_params)
    ada_p, ada_stats = state.ada_p, state.ada_stats
    if cfg.augment is not None:
      if cfg.ada_target is not None:
        ada_p, ada_stats, r_t = augment_lib.ada_update(
            state.ada_p, state.ada_stats, real_s, state.step, cfg.ada_target, cfg.ada_interval,
            cfg.ada_kimg, n)
      else:
        r_t = jnp.mean(jnp.sign(real_s))
      metrics['aug/p'], metrics['aug/rt'] = ada_p, r_t

    # --- G main against the updated D, then path length: lazily its own update, or with
    # interval 1 in the same one.
    fuse_pl = do_pl and cfg.pl_interval == 1
    g_grad = jax.value_and_grad(phases.g_loss, has_aux=True)
    (_, (g_buffers, g_metrics, pl_mean)), grads = g_grad(
        state.g_params, state.g_buffers, d_params, draws, state.pl_mean, state.ada_p, stage,
        alpha, main=True, pl=fuse_pl)
    g_params, g_opt = step_common.apply_update(g_tx, grads, state.g_opt, state.g_params)
    metrics.update(g_metrics)
    if do_pl and not fuse_pl:
      (_, (g_buffers, g_metrics, pl_mean)), grads = g_grad(
          g_params, g_buffers, d_params, draws, state.pl_mean, state.ada_p, stage, alpha,
          main=False, pl=True)
      g_params, g_opt = step_common.apply_update(g_tx, grads, g_opt, g_params)
      metrics.update(g_metrics)

    # --- EMA of G: weights decay toward G, buffers (w_avg, noise_const) are copied.
    beta = ema_beta(n, nimg, cfg)
    ema_params = step_common.ema_update(state.ema_params, g_params, beta)
    metrics['ema_beta'] = beta
    metrics['progress/alpha'] = alpha
    watched = [metrics['loss/G'], metrics['loss/D'], g_params, d_params] + [
        metrics[k] for k in metrics if 'penalty' in k]
    metrics['nonfinite'] = step_common.nonfinite(watched)
    new_state = state.replace(step=state.step + 1, g_params=g_params, g_buffers=g_buffers,
                              d_params=d_params, ema_params=ema_params, ema_buffers=g_buffers,
                              g_opt=g_opt, d_opt=d_opt, pl_mean=pl_mean, ada_p=ada_p,
                              ada_stats=ada_stats)
    return new_state, metrics

  return step


# jit with shardings, the state donated, `stage` and `do_pl` (5th and 6th arguments) static: the
# loop's own jit of a Step.fn, whose argument layout this step shares.
jit_progressive_step = step_common.jit_step


def make_step(G, D, config, c_dim: int,
              batch_sharding: Optional[jax.sharding.Sharding] = None) -> step_common.Step:
  """This step in the loop's interface (registry keys 'nonsaturating' and 'wgan_gp'): any stage
  of a growing G and D (a fixed-resolution run is the one stage at the model's resolution); the
  variant is (do_pl,) of `ProgressiveStepConfig.variant`."""
  cfg = ProgressiveStepConfig.from_config(config, c_dim)
  g_tx, d_tx = make_optimizers(config)
  step = make_progressive_step(G, D, g_tx, d_tx, cfg, batch_sharding)

  def fn(state, batch, alpha, nimg, resolution, variant):
    return step(state, batch, alpha, nimg, resolution, *variant)

  return step_common.Step(cfg.loss, g_tx, d_tx, fn, cfg.variant, VARIANT_NAMES.__getitem__,
                          cfg.reachable())


box_downsample = images_lib.box_downsample
