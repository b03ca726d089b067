"""The pure train step of progressive growing (ProGAN, and StyleGAN trained as in its paper).

One call processes one minibatch at one stage of the growing schedule (`gan_jax.progressive`):

  D: reals brought to the stage resolution and blended during the fade-in
     (`layers.real_images_at`), fakes of the current G, then one Adam step on
       'wgan_gp'        D(G(z)) - D(x) + lambda * GP + drift * D(x)^2          (ProGAN)
       'nonsaturating'  softplus(D(G(z))) + softplus(-D(x)) + gamma / 2 * R1   (StyleGAN)
  G: fresh latents against the updated D, one Adam step on -D(G(z)) ('wgan_gp') or
     softplus(-D(G(z))) ('nonsaturating'); StyleGAN's G also tracks w_avg and mixes styles.
  EMA of G: half-life config.train.ema_kimg, in images, so it does not depend on the batch.

D goes first, then G, as in the official ProGAN and StyleGAN training loops (one D step per
minibatch). The regularisers run in every step (StyleGAN's schedule, no lazy regularisation), so
the optimizers are plain Adam.

`stage` (the resolution) is static: one compiled executable per stage, whose batch size is fixed
by the schedule too. `alpha` (the fade-in, float32) and `nimg` (images shown before this step,
int32, for the EMA ramp-up) are traced inputs, so nothing recompiles while they move. With the
conditional models, the fakes of the D step carry the reals' labels (as ProGAN's code does, which
keeps the gradient penalty's interpolates labelled); the G step draws labels from the batch.
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gan_jax import images as images_lib
from gan_jax import losses
from gan_jax import models
from gan_jax import optim
from gan_jax import step_common
from gan_jax.models import layers
from gan_jax.models import stylegan
from gan_jax.state import GANState

LOSSES = ('nonsaturating', 'wgan_gp')


class ProgressiveStepConfig(NamedTuple):
  """The static numbers the step needs (from config.train and the data)."""
  c_dim: int
  loss: str = 'wgan_gp'
  r1_gamma: float = 10.0
  wgan_lambda: float = 10.0
  wgan_target: float = 1.0
  wgan_drift: float = 0.001
  style_mixing_prob: float = 0.9
  ema_kimg: float = 10.0
  ema_rampup: float = 0.0

  @classmethod
  def from_config(cls, train_config, c_dim: int) -> 'ProgressiveStepConfig':
    t = train_config
    return cls(c_dim, t.loss, t.r1_gamma, t.wgan_lambda, t.wgan_target, t.wgan_drift,
               t.style_mixing_prob, t.ema_kimg, t.ema_rampup)


def make_optimizers(train_config):
  """(G Adam, D Adam) from config.train (`optim.make_optimizers` with D not lazy: its penalty
  runs in every D step)."""
  return optim.make_optimizers(train_config, lazy_d=False)


def ema_beta(batch_size: int, nimg: jax.Array, cfg: ProgressiveStepConfig) -> jax.Array:
  """`step_common.ema_beta` with the config's half-life and ramp-up."""
  return step_common.ema_beta(batch_size, nimg, cfg.ema_kimg, cfg.ema_rampup)


def ws_in_use(stage: int) -> int:
  """StyleGAN ws read up to the blocks of `stage`: two per resolution 4..stage."""
  return 2 * layers.log2_resolution(stage) - 2


def make_progressive_step(G, D, g_tx: optax.GradientTransformation,
                          d_tx: optax.GradientTransformation, cfg: ProgressiveStepConfig,
                          batch_sharding: Optional[jax.sharding.Sharding] = None
                          ) -> Callable[..., tuple[GANState, dict]]:
  """Returns `step(state, batch, alpha, nimg, stage) -> (state, metrics)`; jit it with `stage`
  static (`jit_progressive_step`). `batch` is {'image': (N, stage, stage, C) in [-1, 1] (the
  reals box-filtered to the stage resolution), 'label': (N,) int32}."""
  if cfg.loss not in LOSSES:
    raise ValueError(f'loss must be one of {LOSSES}, got {cfg.loss!r}')
  is_style = models.family_of(G).w_space

  def shard(x):
    if batch_sharding is not None and x.shape[0] % batch_sharding.mesh.size == 0:
      return jax.lax.with_sharding_constraint(x, batch_sharding)
    return x

  def generate(g_params, g_buffers, z, c, key, stage, alpha, update_w_avg):
    """(images at the stage resolution, G buffers after the mapping)."""
    if not is_style:
      return G.apply({'params': g_params}, z, c, stage=stage, alpha=alpha), g_buffers
    variables = {'params': g_params, 'buffers': g_buffers}
    k_cut, k_prob, k_z, k_noise = jax.random.split(key, 4)
    ws, mutated = G.apply(variables, z, c, update_w_avg=update_w_avg, method='map',
                          mutable=['buffers'])
    used = ws_in_use(stage)
    if cfg.style_mixing_prob > 0 and used > 1:
      # The crossover falls among the layers the current stage uses (the official code's
      # cur_layers), so a mixed minibatch always mixes something visible.
      cutoff = jax.random.randint(k_cut, (), 1, used)
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff,
                         ws.shape[1])
      ws2 = G.apply(variables, shard(jax.random.normal(k_z, z.shape, z.dtype)), c, method='map')
      ws = stylegan.mix_styles(ws, ws2, cutoff)
    buffers = mutated['buffers']
    images = G.apply({'params': g_params, 'buffers': buffers}, ws, method='synthesize',
                     stage=stage, alpha=alpha, rngs={'noise': k_noise})
    return images, buffers

  def step(state: GANState, batch: dict, alpha: jax.Array, nimg: jax.Array, stage: int):
    alpha = jnp.asarray(alpha, jnp.float32)
    n = batch['image'].shape[0]
    if batch['image'].shape[1:3] != (stage, stage):
      raise ValueError(f'the batch holds {batch["image"].shape[1:3]} images; stage {stage} needs '
                       f'them box-filtered to {stage}x{stage} first')
    keys = iter(jax.random.split(jax.random.fold_in(state.rng, state.step), 8))
    labels = batch['label']
    c_real = (jax.nn.one_hot(labels, cfg.c_dim, dtype=jnp.float32) if cfg.c_dim
              else jnp.zeros((n, 0), jnp.float32))
    reals = layers.real_images_at(batch['image'], stage, alpha)

    def d_scores(d_params, images, c):
      return D.apply({'params': d_params}, images, c, stage=stage, alpha=alpha)

    metrics = {}
    # --- D: reals against fakes of the current G (labelled like the reals).
    z = shard(jax.random.normal(next(keys), (n, G.z_dim)))
    fakes, _ = generate(state.g_params, state.g_buffers, z, c_real, next(keys), stage, alpha,
                        False)
    fakes = jax.lax.stop_gradient(fakes)
    k_gp = next(keys)

    def d_loss_fn(d_params):
      real_s, fake_s = d_scores(d_params, reals, c_real), d_scores(d_params, fakes, c_real)
      critic = lambda x: d_scores(d_params, x, c_real)
      if cfg.loss == 'wgan_gp':
        penalty = losses.gradient_penalty(critic, reals, fakes, k_gp, cfg.wgan_target)
        loss = losses.d_wgan_gp(real_s, fake_s, penalty, cfg.wgan_lambda, cfg.wgan_drift)
      else:
        penalty = (losses.r1_penalty(critic, reals) if cfg.r1_gamma > 0
                   else jnp.zeros((n,), jnp.float32))
        loss = losses.d_logistic(real_s, fake_s) + cfg.r1_gamma / 2 * jnp.mean(penalty)
      return loss, (real_s, fake_s, penalty)

    (d_loss, (real_s, fake_s, penalty)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params)
    updates, d_opt = d_tx.update(grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)
    metrics['loss/D'] = d_loss
    metrics['scores/real'] = jnp.mean(real_s)
    metrics['scores/fake'] = jnp.mean(fake_s)
    metrics['loss/D_gp_penalty' if cfg.loss == 'wgan_gp' else 'loss/D_r1_penalty'] = (
        jnp.mean(penalty))

    # --- G: fresh latents against the updated D; StyleGAN's w_avg follows this pass.
    z = shard(jax.random.normal(next(keys), (n, G.z_dim)))
    c = step_common.fake_labels(next(keys), labels, cfg.c_dim)
    k_g = next(keys)

    def g_loss_fn(g_params):
      images, buffers = generate(g_params, state.g_buffers, z, c, k_g, stage, alpha, True)
      scores = d_scores(d_params, images, c)
      loss = (losses.g_wasserstein(scores) if cfg.loss == 'wgan_gp'
              else losses.g_nonsaturating(scores))
      return loss, buffers

    (g_loss, g_buffers), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    updates, g_opt = g_tx.update(grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    metrics['loss/G'] = g_loss

    beta = ema_beta(n, nimg, cfg)
    ema_params = jax.tree_util.tree_map(lambda e, p: p + (e - p) * beta, state.ema_params,
                                        g_params)
    metrics['ema_beta'] = beta
    metrics['progress/alpha'] = alpha
    watched = [g_loss, d_loss, penalty, g_params, d_params]
    metrics['nonfinite'] = 1 - jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(watched)])).astype(jnp.int32)
    new_state = state.replace(step=state.step + 1, g_params=g_params, g_buffers=g_buffers,
                              d_params=d_params, ema_params=ema_params, ema_buffers=g_buffers,
                              g_opt=g_opt, d_opt=d_opt)
    return new_state, metrics

  return step


def jit_progressive_step(step, state_sharding, batch_sharding, replicated):
  """jit with shardings and the state donated; `stage` (the 5th argument) is static."""
  return jax.jit(step, static_argnums=(4,), donate_argnums=(0,),
                 in_shardings=(state_sharding, batch_sharding, replicated, replicated),
                 out_shardings=(state_sharding, replicated))


reset_optimizers = step_common.reset_optimizers


def make_step(G, D, config, c_dim: int,
              batch_sharding: Optional[jax.sharding.Sharding] = None) -> step_common.Step:
  """This step in the loop's interface (registry keys 'nonsaturating' and 'wgan_gp'): any stage
  of a growing G and D (a fixed-resolution run is the one stage at the model's resolution)."""
  cfg = ProgressiveStepConfig.from_config(config.train, c_dim)
  g_tx, d_tx = make_optimizers(config.train)
  step = make_progressive_step(G, D, g_tx, d_tx, cfg, batch_sharding)

  def fn(state, batch, alpha, nimg, resolution, variant):
    del variant  # one variant: the penalties run in every step
    return step(state, batch, alpha, nimg, resolution)

  return step_common.Step(cfg.loss, g_tx, d_tx, fn, lambda step_index: (),
                          lambda variant: 'plain', ((),))


box_downsample = images_lib.box_downsample
