"""The pure StyleGAN2 train step: G update (+ path length), D update (+ R1), EMA of G.

One call processes one minibatch of reals. As in NVIDIA's StyleGAN2(-ADA), each phase is its own
optimizer step on the shared optimizer state, in the order G main, G path length (when due),
D main, D R1 (when due); the regularisers use the lazy adjustment of `optim.py`. Whether a
regulariser is due is a static flag, so there are at most four compiled variants. A regulariser
with interval 1 is not lazy: it joins its main phase in one update (NVIDIA's 'Gboth'/'Dboth'),
and R1 then comes from the same forward pass on the reals as D's logistic loss.

The phases (`Phases`, gan_jax/stylegan2_phases.py) are deterministic functions of the parameters
and the step's random inputs (`StepDraws`: latents, mixing cutoffs, noise keys, path-length
directions), which the step derives from its key (`draw`: one key per named phase,
`step_common.phase_key`) unless given; tests/test_nvlabs_step.py feeds NVIDIA's recorded draws
and matches StyleGAN2-ADA-PyTorch's losses, gradients and Adam steps. `make_step` wraps the step
in the loop's interface (`step_common.Step`, registry key 'stylegan2').

With augmentation on (config.augment.pipe), every image D sees is augmented with probability
state.ada_p — fakes in G main and D main, reals in D main and D R1 (R1 is the gradient with
respect to the un-augmented reals, through the augmentation, as NVIDIA does) — and ADA moves
ada_p inside the step from the sign of D's logits on reals.
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gan_jax import augment as augment_lib
from gan_jax import optim
from gan_jax import step_common
from gan_jax import stylegan2_phases
from gan_jax.state import GANState

# The step's variants (do_r1, do_pl), as progress lines and gan_jax.aot name them.
VARIANT_NAMES = {(True, True): 'r1_pl', (True, False): 'r1', (False, True): 'pl',
                 (False, False): 'plain'}


class StepConfig(NamedTuple):
  """The static numbers the step needs (config.loss, ema, schedule.batch_size, augment,
  train.remat)."""
  batch_size: int
  c_dim: int
  r1_gamma: float
  r1_interval: int
  pl_weight: float
  pl_interval: int
  pl_decay: float
  pl_batch_shrink: int
  style_mixing_prob: float
  ema_kimg: float
  ema_rampup: float
  augment: Optional[augment_lib.AugmentConfig] = None  # None: D sees the images as they are
  ada_target: Optional[float] = None  # None: ada_p stays fixed
  ada_interval: int = 4
  ada_kimg: float = 500.0
  remat: str = 'none'  # checkpoint policy of G's / D's blocks inside path length / R1
  blur_init_sigma: float = 0.0  # StyleGAN3's blur of D's inputs (0: off), fading out over
  blur_fade_kimg: float = 0.0  # the first blur_fade_kimg

  @classmethod
  def from_config(cls, config, c_dim: int) -> 'StepConfig':
    l, a = config.loss, config.augment
    aug = {}
    if a.pipe != 'none':
      aug = dict(augment=augment_lib.preset(a.pipe), ada_target=a.target,
                 ada_interval=a.interval, ada_kimg=a.ada_kimg)
    return cls(config.schedule.batch_size, c_dim, l.r1_gamma, l.r1_interval, l.pl_weight,
               l.pl_interval, l.pl_decay, l.pl_batch_shrink, l.style_mixing_prob,
               config.ema.kimg, config.ema.rampup, remat=config.train.remat,
               blur_init_sigma=float(l.get('blur_init_sigma', 0.0) or 0.0),
               blur_fade_kimg=float(l.get('blur_fade_kimg', 0.0) or 0.0), **aug)

  def reachable(self) -> tuple[tuple[bool, bool], ...]:
    """The (do_r1, do_pl) flags a run meets, heaviest first (R1 and PL are both due at step 0)."""
    period = math.lcm(max(self.r1_interval, 1), max(self.pl_interval, 1))
    seen = {self.regularize(s) for s in range(period)}
    return tuple(v for v in VARIANT_NAMES if v in seen)

  def regularize(self, step: int) -> tuple[bool, bool]:
    """(do_r1, do_pl) for a host-side step counter."""
    do_r1 = self.r1_interval > 0 and self.r1_gamma > 0 and step % self.r1_interval == 0
    do_pl = self.pl_interval > 0 and self.pl_weight > 0 and step % self.pl_interval == 0
    return do_r1, do_pl


def ema_beta(step: jax.Array, cfg: StepConfig) -> jax.Array:
  """G_ema decay for this step (images shown so far: step * batch), `step_common.ema_beta`."""
  return step_common.ema_beta(cfg.batch_size, step.astype(jnp.float32) * cfg.batch_size,
                              cfg.ema_kimg, cfg.ema_rampup)


fake_labels = step_common.fake_labels


GDraws, StepDraws, Phases = (stylegan2_phases.GDraws, stylegan2_phases.StepDraws,
                             stylegan2_phases.Phases)


def draw(key: jax.Array, G, cfg: StepConfig, labels: jax.Array, do_pl: bool,
         shard: Callable[[jax.Array], jax.Array] = lambda x: x) -> StepDraws:
  """The step's random inputs from its key (step_common.step_key), one key per named phase, so
  D's draws do not move with whether path length is due.

  Style mixing as NVIDIA: a cutoff uniform in [1, num_ws), used with probability
  style_mixing_prob (else num_ws), and a second latent.
  """
  n, z_dim = cfg.batch_size, G.z_dim

  def g_draws(phase_key, num):
    k_z, k_c, k_mix, k_noise = jax.random.split(phase_key, 4)
    z = shard(jax.random.normal(k_z, (num, z_dim)))
    c = fake_labels(k_c, labels, cfg.c_dim)[:num]
    cutoff, mix_z = jnp.asarray(G.num_ws, jnp.int32), None
    if cfg.style_mixing_prob > 0:
      k_cut, k_prob, k_mz = jax.random.split(k_mix, 3)
      cutoff = jax.random.randint(k_cut, (), 1, G.num_ws)
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff,
                         G.num_ws)
      mix_z = shard(jax.random.normal(k_mz, z.shape, z.dtype))
    return GDraws(z, c, cutoff, mix_z, k_noise)

  g_main = g_draws(step_common.phase_key(key, 'g_main'), n)
  g_pl = pl_noise = None
  if do_pl:
    k_g, k_dir = jax.random.split(step_common.phase_key(key, 'g_pl'))
    g_pl = g_draws(k_g, max(n // cfg.pl_batch_shrink, 1))
    res = G.img_resolution
    pl_noise = jax.random.normal(k_dir, (g_pl.z.shape[0], res, res, G.img_channels))
  d_main = g_draws(step_common.phase_key(key, 'd_main'), n)
  aug = jax.random.split(step_common.phase_key(key, 'augment'), 4)
  return StepDraws(g_main, g_pl, pl_noise, d_main, aug)


apply_update = step_common.apply_update
ema_update = step_common.ema_update


def make_train_step(G, D, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                    cfg: StepConfig, batch_sharding: Optional[jax.sharding.Sharding] = None,
                    noise_mode: str = 'random') -> Callable[..., tuple[GANState, dict]]:
  """Returns `train_step(state, batch, do_r1, do_pl, draws=None) -> (state, metrics)`; jit it
  with the two flags static. `batch` is {'image': (N, H, W, C) in [-1, 1], 'label': (N,) int32};
  `draws` (a StepDraws) replaces the step's random inputs, which by default come from
  fold_in(state.rng, state.step). `noise_mode`: see `Phases`."""

  shard = step_common.batch_constraint(batch_sharding)
  phases = Phases(G, D, cfg, shard, noise_mode)

  def train_step(state: GANState, batch: dict, do_r1: bool, do_pl: bool,
                 draws: Optional[StepDraws] = None):
    n = cfg.batch_size
    reals, labels = batch['image'], batch['label']
    if draws is None:
      draws = draw(step_common.step_key(state.rng, state.step), G, cfg, labels, do_pl, shard)
    c_real = step_common.real_labels(labels, cfg.c_dim)
    metrics = {}
    blur = stylegan2_phases.blur_sigma(state.step.astype(jnp.float32) * n, cfg)
    if cfg.blur_init_sigma > 0:
      metrics['blur_sigma'] = blur

    # --- G main, then path length: lazily its own update, or with interval 1 in the same one
    # (NVIDIA's 'Gboth').
    fuse_pl = do_pl and cfg.pl_interval == 1
    g_grad = jax.value_and_grad(phases.g_loss, has_aux=True)
    (_, (g_buffers, g_metrics, pl_mean)), grads = g_grad(
        state.g_params, state.g_buffers, state.d_params, draws, state.pl_mean, state.ada_p,
        main=True, pl=fuse_pl, blur_sigma=blur)
    g_params, g_opt = apply_update(g_tx, grads, state.g_opt, state.g_params)
    metrics.update(g_metrics)
    if do_pl and not fuse_pl:
      (_, (g_buffers, g_metrics, pl_mean)), grads = g_grad(
          g_params, g_buffers, state.d_params, draws, state.pl_mean, state.ada_p, main=False,
          pl=True)
      g_params, g_opt = apply_update(g_tx, grads, g_opt, g_params)
      metrics.update(g_metrics)

    # --- D main: logistic loss on reals and fakes of the updated G; R1 joins it with interval 1
    # ('Dboth'), else it is its own update on the reals.
    fakes, g_buffers = phases.d_fakes(g_params, g_buffers, draws)
    fuse_r1 = do_r1 and cfg.r1_interval == 1
    d_grad = jax.value_and_grad(phases.d_loss, has_aux=True)
    (_, (d_metrics, real_logits)), grads = d_grad(
        state.d_params, fakes, draws, reals, c_real, state.ada_p, main=True, r1=fuse_r1,
        blur_sigma=blur)
    d_params, d_opt = apply_update(d_tx, grads, state.d_opt, state.d_params)
    metrics.update(d_metrics)
    metrics['scores/real'] = jnp.mean(real_logits)
    metrics['scores/real_sign'] = jnp.mean(jnp.sign(real_logits))
    ada_p, ada_stats = state.ada_p, state.ada_stats
    if cfg.augment is not None:
      if cfg.ada_target is not None:
        ada_p, ada_stats, r_t = augment_lib.ada_update(
            state.ada_p, state.ada_stats, real_logits, state.step, cfg.ada_target,
            cfg.ada_interval, cfg.ada_kimg, n)
      else:
        r_t = jnp.mean(jnp.sign(real_logits))
      metrics['aug/p'] = ada_p
      metrics['aug/rt'] = r_t
    if do_r1 and not fuse_r1:
      (_, (d_metrics, _)), grads = d_grad(d_params, fakes, draws, reals, c_real, state.ada_p,
                                          main=False, r1=True, blur_sigma=blur)
      d_params, d_opt = apply_update(d_tx, grads, d_opt, d_params)
      metrics.update(d_metrics)

    # --- EMA of G: weights decay toward G, buffers (w_avg, noise_const) are copied.
    beta = ema_beta(state.step, cfg)
    ema_params = ema_update(state.ema_params, g_params, beta)
    metrics['ema_beta'] = beta
    # Non-finite guard, checked on the host only when a tick is logged or a checkpoint is due.
    watched = [metrics['loss/G'], metrics['loss/D'], g_params, d_params] + [
        metrics[k] for k in metrics if 'penalty' in k]
    metrics['nonfinite'] = step_common.nonfinite(watched)

    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_buffers=g_buffers, d_params=d_params,
        ema_params=ema_params, ema_buffers=g_buffers, g_opt=g_opt, d_opt=d_opt, pl_mean=pl_mean,
        ada_p=ada_p, ada_stats=ada_stats)
    return new_state, metrics

  return train_step


def jit_train_step(train_step, state_sharding, batch_sharding, replicated):
  """jit with shardings, state donated; the regularisation flags are static."""
  return jax.jit(train_step, static_argnums=(2, 3), donate_argnums=(0,),
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, replicated))


def make_step(G, D, config, c_dim: int,
              batch_sharding: Optional[jax.sharding.Sharding] = None) -> step_common.Step:
  """StyleGAN2's step in the loop's interface (registry key 'stylegan2'): one stage at the
  model's resolution; the variant is (do_r1, do_pl) of `StepConfig.regularize`. The EMA ramp-up
  counts step * batch images, which is `nimg` on this one-stage schedule."""
  cfg = StepConfig.from_config(config, c_dim)
  g_tx, d_tx = optim.make_optimizers(config)
  train_step = make_train_step(G, D, g_tx, d_tx, cfg, batch_sharding)

  def fn(state, batch, alpha, nimg, resolution, variant):
    del alpha, nimg
    if resolution != G.img_resolution:
      raise ValueError(f"the 'stylegan2' step trains at the model's resolution "
                       f'{G.img_resolution} only, not at {resolution}')
    return train_step(state, batch, *variant)

  return step_common.Step('stylegan2', g_tx, d_tx, fn, cfg.regularize, VARIANT_NAMES.__getitem__,
                          cfg.reachable())
