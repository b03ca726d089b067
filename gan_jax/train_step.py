"""The pure StyleGAN2 train step: G update (+ path length), D update (+ R1), EMA of G.

One call processes one minibatch of reals. As in NVIDIA's StyleGAN2(-ADA), each phase is its own
optimizer step on the shared optimizer state, in the order G main, G path length (when due),
D main, D R1 (when due); the regularisers use the lazy adjustment of `optim.py`. Whether a
regulariser is due is a static flag, so there are at most four compiled variants. A regulariser
with interval 1 is not lazy: it joins its main phase in one update (NVIDIA's 'Gboth'/'Dboth'),
and R1 then comes from the same forward pass on the reals as D's logistic loss.

With augmentation on (config.augment.pipe), every image D sees is augmented with probability
state.ada_p — fakes in G main and D main, reals in D main and D R1 (R1 is the gradient with
respect to the un-augmented reals, through the augmentation, as NVIDIA does) — and ADA moves
ada_p inside the step from the sign of D's logits on reals.
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gan_jax import augment as augment_lib
from gan_jax import losses
from gan_jax.state import GANState


class StepConfig(NamedTuple):
  """The static numbers the step needs (from config.train and the model)."""
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

  @classmethod
  def from_config(cls, train_config, c_dim: int, augment_config=None) -> 'StepConfig':
    t = train_config
    aug = {}
    if augment_config is not None and augment_config.pipe != 'none':
      a = augment_config
      aug = dict(augment=augment_lib.preset(a.pipe), ada_target=a.target,
                 ada_interval=a.interval, ada_kimg=a.ada_kimg)
    return cls(t.batch_size, c_dim, t.r1_gamma, t.r1_interval, t.pl_weight, t.pl_interval,
               t.pl_decay, t.pl_batch_shrink, t.style_mixing_prob, t.ema_kimg, t.ema_rampup,
               remat=t.get('remat', 'none'), **aug)

  def regularize(self, step: int) -> tuple[bool, bool]:
    """(do_r1, do_pl) for a host-side step counter."""
    do_r1 = self.r1_interval > 0 and self.r1_gamma > 0 and step % self.r1_interval == 0
    do_pl = self.pl_interval > 0 and self.pl_weight > 0 and step % self.pl_interval == 0
    return do_r1, do_pl


def ema_beta(step: jax.Array, cfg: StepConfig) -> jax.Array:
  """G_ema decay for this step: 0.5 ** (batch / half-life in images), with optional ramp-up."""
  ema_nimg = jnp.asarray(cfg.ema_kimg * 1000.0, jnp.float32)
  if cfg.ema_rampup > 0:
    cur_nimg = step.astype(jnp.float32) * cfg.batch_size
    ema_nimg = jnp.minimum(ema_nimg, cur_nimg * cfg.ema_rampup)
  return 0.5 ** (cfg.batch_size / jnp.maximum(ema_nimg, 1e-8))


def fake_labels(key, labels, c_dim):
  """Labels for generated images: the real batch's labels in a random order (the data's prior)."""
  if c_dim == 0:
    return jnp.zeros((labels.shape[0], 0), jnp.float32)
  return jax.nn.one_hot(jax.random.permutation(key, labels), c_dim, dtype=jnp.float32)


def make_train_step(G, D, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                    cfg: StepConfig, batch_sharding: Optional[jax.sharding.Sharding] = None
                    ) -> Callable[..., tuple[GANState, dict]]:
  """Returns `train_step(state, batch, do_r1, do_pl) -> (state, metrics)`; jit it with the two
  flags static. `batch` is {'image': (N, H, W, C) in [-1, 1], 'label': (N,) int32}."""

  def shard(x):
    # Generated latents carry no sharding of their own: keep the generator data-parallel.
    if batch_sharding is not None and x.shape[0] % batch_sharding.mesh.size == 0:
      return jax.lax.with_sharding_constraint(x, batch_sharding)
    return x

  def map_ws(g_params, g_buffers, z, c, key, update_w_avg):
    """Mapping with style mixing; returns (ws, new buffers)."""
    variables = {'params': g_params, 'buffers': g_buffers}
    ws, mutated = G.apply(variables, z, c, update_w_avg=update_w_avg, method='map',
                          mutable=['buffers'])
    if cfg.style_mixing_prob > 0:
      num_ws = ws.shape[1]
      k_cut, k_prob, k_z = jax.random.split(key, 3)
      cutoff = jax.random.randint(k_cut, (), 1, num_ws)
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff, num_ws)
      z2 = shard(jax.random.normal(k_z, z.shape, z.dtype))
      ws2 = G.apply(variables, z2, c, method='map')
      mix = (jnp.arange(num_ws) >= cutoff)[None, :, None]
      ws = jnp.where(mix, ws2, ws)
    return ws, mutated['buffers']

  # config.train.remat: path length and R1 differentiate twice through G / D; these copies
  # (same parameters) checkpoint every block, so the double backward keeps the block inputs only.
  G_reg = G if cfg.remat == 'none' else G.clone(remat=cfg.remat)
  D_reg = D if cfg.remat == 'none' else D.clone(remat=cfg.remat)

  def synth(g_params, g_buffers, ws, key, G=G):
    return G.apply({'params': g_params, 'buffers': g_buffers}, ws, method='synthesize',
                   rngs={'noise': key})

  def d_logits(d_params, images, c, D=D):
    return D.apply({'params': d_params}, images, c)

  def augment(images, key, p):
    if cfg.augment is None:
      return images
    return augment_lib.augment(key, images, p, cfg.augment)

  def train_step(state: GANState, batch: dict, do_r1: bool, do_pl: bool):
    n = cfg.batch_size
    key = jax.random.fold_in(state.rng, state.step)
    keys = iter(jax.random.split(key, 16))
    reals, labels = batch['image'], batch['label']
    c_real = (jax.nn.one_hot(labels, cfg.c_dim, dtype=jnp.float32) if cfg.c_dim
              else jnp.zeros((n, 0), jnp.float32))
    z_dim = G.z_dim
    metrics = {}
    # Separate keys for the augmentations, so the other draws do not depend on whether ADA is on.
    aug_keys = iter(jax.random.split(jax.random.fold_in(key, 1), 4))

    # --- G main: non-saturating loss on fresh fakes; w_avg tracks this phase's ws.
    z = shard(jax.random.normal(next(keys), (n, z_dim)))
    c = fake_labels(next(keys), labels, cfg.c_dim)
    k_mix, k_noise, k_aug_g = next(keys), next(keys), next(aug_keys)

    fuse_pl = do_pl and cfg.pl_interval == 1
    if do_pl:
      n_pl = max(n // cfg.pl_batch_shrink, 1)
      z_pl = shard(jax.random.normal(next(keys), (n_pl, z_dim)))
      c_pl = fake_labels(next(keys), labels, cfg.c_dim)[:n_pl]
      k_pl_mix, k_pl_noise, k_y = next(keys), next(keys), next(keys)

    def pl_loss(g_params, g_buffers):
      ws, _ = map_ws(g_params, g_buffers, z_pl, c_pl, k_pl_mix, update_w_avg=False)
      lengths = losses.path_lengths(lambda w: synth(g_params, g_buffers, w, k_pl_noise, G_reg), ws,
                                     k_y)
      penalty, new_mean = losses.path_length_penalty(lengths, state.pl_mean, cfg.pl_decay)
      return jnp.mean(penalty) * cfg.pl_weight * cfg.pl_interval, (penalty, new_mean)

    def g_main_loss(g_params):
      ws, buffers = map_ws(g_params, state.g_buffers, z, c, k_mix, update_w_avg=True)
      fakes = augment(synth(g_params, buffers, ws, k_noise), k_aug_g, state.ada_p)
      fake_logits = d_logits(state.d_params, fakes, c)
      loss = losses.g_nonsaturating(fake_logits)
      pl_aux = None
      if fuse_pl:  # pl_interval 1: one G update for both terms (NVIDIA's 'Gboth')
        pl_term, pl_aux = pl_loss(g_params, state.g_buffers)
        loss, pl_aux = loss + pl_term, (loss, pl_aux)
      return loss, (buffers, fake_logits, pl_aux)

    (g_loss, (g_buffers, _, pl_aux)), g_grads = jax.value_and_grad(g_main_loss, has_aux=True)(
        state.g_params)
    updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    pl_mean = state.pl_mean
    if fuse_pl:
      g_loss, (penalty, pl_mean) = pl_aux
    elif do_pl:  # G path-length regularisation, lazy: its own update
      (_, (penalty, pl_mean)), grads = jax.value_and_grad(pl_loss, has_aux=True)(
          g_params, g_buffers)
      updates, g_opt = g_tx.update(grads, g_opt, g_params)
      g_params = optax.apply_updates(g_params, updates)
    metrics['loss/G'] = g_loss
    if do_pl:
      metrics['loss/G_pl_penalty'] = jnp.mean(penalty)
      metrics['pl_mean'] = pl_mean

    # --- D main: logistic loss on reals and fakes of the updated G.
    z = shard(jax.random.normal(next(keys), (n, z_dim)))
    c = fake_labels(next(keys), labels, cfg.c_dim)
    ws, _ = map_ws(g_params, g_buffers, z, c, next(keys), update_w_avg=False)
    fakes = jax.lax.stop_gradient(synth(g_params, g_buffers, ws, next(keys)))
    fakes_aug = augment(fakes, next(aug_keys), state.ada_p)
    reals_aug = augment(reals, next(aug_keys), state.ada_p)

    fuse_r1 = do_r1 and cfg.r1_interval == 1
    k_aug_r1 = next(aug_keys)

    def r1_term(penalty):
      return jnp.mean(penalty) * (cfg.r1_gamma / 2) * cfg.r1_interval

    def d_main_loss(d_params):
      fake_logits = d_logits(d_params, fakes_aug, c)
      if fuse_r1:  # r1_interval 1: logistic loss and R1 from one forward on the reals
        real_fn = lambda x: d_logits(d_params, augment(x, k_aug_r1, state.ada_p), c_real, D_reg)
        real_logits, penalty = losses.logits_and_r1(real_fn, reals)
        loss = losses.d_logistic(real_logits, fake_logits)
        return loss + r1_term(penalty), (loss, real_logits, fake_logits, penalty)
      real_logits = d_logits(d_params, reals_aug, c_real)
      loss = losses.d_logistic(real_logits, fake_logits)
      return loss, (loss, real_logits, fake_logits, None)

    (_, (d_loss, real_logits, fake_logits, penalty)), d_grads = jax.value_and_grad(
        d_main_loss, has_aux=True)(state.d_params)
    updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)
    metrics['loss/D'] = d_loss
    metrics['scores/real'] = jnp.mean(real_logits)
    metrics['scores/fake'] = jnp.mean(fake_logits)
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

    # --- D R1 regularisation, lazy: its own update on the reals.
    if do_r1 and not fuse_r1:

      def r1_loss(d_params):
        penalty = losses.r1_penalty(
            lambda x: d_logits(d_params, augment(x, k_aug_r1, state.ada_p), c_real, D_reg), reals)
        return r1_term(penalty), penalty

      (_, penalty), grads = jax.value_and_grad(r1_loss, has_aux=True)(d_params)
      updates, d_opt = d_tx.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
    if do_r1:
      metrics['loss/D_r1_penalty'] = jnp.mean(penalty)

    # --- EMA of G: weights decay toward G, buffers (w_avg, noise_const) are copied.
    beta = ema_beta(state.step, cfg)
    ema_params = jax.tree_util.tree_map(lambda e, p: p + (e - p) * beta, state.ema_params,
                                        g_params)
    metrics['ema_beta'] = beta
    # Non-finite guard, checked on the host only when a tick is logged or a checkpoint is due.
    watched = [g_loss, d_loss, g_params, d_params] + [metrics[k] for k in metrics if 'penalty' in k]
    metrics['nonfinite'] = 1 - jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(watched)])).astype(jnp.int32)

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

