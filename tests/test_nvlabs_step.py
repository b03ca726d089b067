"""One training step equals NVIDIA's StyleGAN2-ADA-PyTorch step (tests/fixtures/nvlabs_step).

The fixtures hold NVIDIA's StyleGAN2Loss run on small networks (G of tests/fixtures/nvlabs,
D of d.npz) with every random draw recorded: per phase (Gmain, Greg, Gboth, Dmain, Dreg, Dboth)
the losses, the gradients and the parameters after NVIDIA's lazily adjusted Adam step, then
NVIDIA's first training iteration (four phases sharing each network's Adam state) and G_ema.
Our phases (`train_step.Phases`, `train_step.apply_update`, `optim.adam_lazy`) and the whole
`train_step` are fed the same inputs: the recorded z, mixing cutoffs and second latents, path-
length directions and reals, with the synthesis noise in 'const' mode (NVIDIA's run used the
stored noise_const maps). Tolerances are the ones the fixtures' README derives from float32 vs
float64 reruns of NVIDIA's own code.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import optim
from gan_jax import train_step as ts
from gan_jax.models import stylegan2
from gan_jax.state import GANState
from gan_jax.tools import nvlabs

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
STEP = FIXTURES / 'nvlabs_step'
N = 4
LR, EPS = 0.0025, 1e-8

G = stylegan2.Generator(img_resolution=32, img_channels=3, z_dim=64, w_dim=64, mapping_layers=2,
                        channel_base=2048, channel_max=64)
D = stylegan2.Discriminator(img_resolution=32, img_channels=3, channel_base=2048, channel_max=64,
                            mbstd_group_size=4)


def _load(name):
  return dict(np.load(name, allow_pickle=False))


@functools.cache
def fixture(name):
  return _load(STEP / f'{name}.npz')


@functools.cache
def start():
  """NVIDIA's starting G and D: (our variables, NVIDIA's state dicts)."""
  g_sd, d_sd = _load(FIXTURES / 'nvlabs' / 'g_uncond.npz'), fixture('d')
  g_vars = nvlabs.generator_variables_from_nvlabs(g_sd, G)
  d_vars = nvlabs.discriminator_variables_from_nvlabs(d_sd, D)
  return g_vars, d_vars, g_sd, d_sd


def step_config(pl_interval=4, r1_interval=16):
  return ts.StepConfig(batch_size=N, c_dim=0, r1_gamma=1.0, r1_interval=r1_interval,
                       pl_weight=2.0, pl_interval=pl_interval, pl_decay=0.01, pl_batch_shrink=2,
                       style_mixing_prob=0.9, ema_kimg=10.0, ema_rampup=0.05)


def adam(interval, weight):
  return optim.adam_lazy(LR, 0.0, 0.99, EPS, interval, weight)


def test_discriminator_import_is_strict():
  d_sd = fixture('d')
  missing = {k: v for k, v in d_sd.items() if k != 'b4.out.bias'}
  with pytest.raises(ValueError, match='missing: params/b4/out/bias'):
    nvlabs.discriminator_variables_from_nvlabs(missing, D)
  with pytest.raises(ValueError, match='unexpected NVIDIA tensor: params/b8/conv1/extra'):
    nvlabs.discriminator_variables_from_nvlabs(
        dict(d_sd, **{'b8.conv1.extra': np.zeros(3, np.float32)}), D)
  wide = stylegan2.Discriminator(img_resolution=32, img_channels=3, channel_base=4096,
                                 channel_max=128)
  with pytest.raises(ValueError, match='shape mismatch at params/b32/conv0/weight'):
    nvlabs.discriminator_variables_from_nvlabs(d_sd, wide)


# --------------------------------------------------------------------------------------------
# The recorded inputs.


def nhwc(x):
  return jnp.asarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))


def g_draws(f, prefix, mix, rows=N):
  """GDraws of one recorded run_G: z (first `rows`), mixing draw set `mix` ('mix0'/'mix1')."""
  z = f[prefix + 'in/gen_z'][:rows]
  return ts.GDraws(z=jnp.asarray(z), c=jnp.zeros((rows, 0), jnp.float32),
                   mix_cutoff=jnp.asarray(f[f'{prefix}in/{mix}_cutoff_used'], jnp.int32),
                   mix_z=jnp.asarray(f[f'{prefix}in/{mix}_z']),
                   noise=jax.random.PRNGKey(0))  # unused: noise_mode 'const'


def pl_noise(f, prefix=''):
  # NVIDIA stores randn / sqrt(H * W) = randn / 32 (exact); our path_lengths takes the randn.
  return nhwc(f[prefix + 'in/pl_noise'] * 32)


def step_draws(g_main=None, g_pl=None, noise=None, d_main=None):
  unused = g_main or g_pl or d_main
  return ts.StepDraws(g_main=g_main or unused, g_pl=g_pl, pl_noise=noise,
                      d_main=d_main or unused, aug=jax.random.split(jax.random.PRNGKey(1), 4))


def reals(f):
  return nhwc(f['in/real_img'])


# --------------------------------------------------------------------------------------------
# Our tensors under NVIDIA's names and layouts, and the comparisons of the README.


def nv(tree):
  """{NVIDIA name: numpy array in NVIDIA's layout} of a params / grads / buffers tree."""
  out = {}
  for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [p.key for p in path]
    out['.'.join(keys)] = nvlabs.to_nvlabs_layout(keys[-1], np.asarray(v))
  return out


def probe(net, name, value, every=1):
  """The stored entries of `value` (the probe rule): all, or the probed flat indices."""
  probes = fixture('probes')
  idx = probes.get(f'{net}/{name}')
  return value if idx is None else np.asarray(value).reshape(-1)[idx[::every]]


def check_grads(net, grads, f, rel_tol):
  """Per tensor, max |ours - NVIDIA's| <= rel_tol * max |NVIDIA's| over the stored entries, and
  the whole tensor's sum |g| and sum g^2 (gstat) to the same relative tolerance."""
  ours = nv(grads)
  assert sorted(ours) == sorted(k[5:] for k in f if k.startswith('grad/'))
  overall = max(f[f'gstat/{name}'][3] for name in ours)
  errors = {}
  for name, g in ours.items():
    ref, (_, abs_sum, sq_sum, gmax) = f[f'grad/{name}'], f[f'gstat/{name}']
    mine = probe(net, name, g)
    assert mine.shape == ref.shape, name
    # Exactly-zero NVIDIA gradients (README "Checks"): ours must be zero to rounding.
    scale = gmax if gmax > 0 else overall
    errors[name] = float(np.max(np.abs(mine - ref)) / scale)
    g64 = np.asarray(g, np.float64)
    if gmax > 0:
      np.testing.assert_allclose(np.sum(np.abs(g64)), abs_sum, rtol=rel_tol, err_msg=name)
      np.testing.assert_allclose(np.sum(g64 ** 2), sq_sum, rtol=2 * rel_tol, err_msg=name)
  worst = max(errors, key=errors.get)
  assert errors[worst] <= rel_tol, (worst, errors[worst])
  return errors


def ulps(p, p_new, lr):
  return np.spacing(np.maximum(np.maximum(np.abs(p), np.abs(p_new)), lr).astype(np.float32))


def check_after(net, start_sd, after, f, lr):
  """End to end (our gradients, our Adam): <= 32 ulp of max(|p|, |p'|, lr) where NVIDIA's
  gradient at the entry is >= 1e-5, else only <= 2 lr (README, "Tolerances")."""
  for name, p_new in nv(after).items():
    ref, g_ref = f[f'after/{name}'], f[f'grad/{name}']
    if f'{net}/{name}' in fixture('probes'):
      g_ref = g_ref[::4]  # the gradient at the stored parameter entries
    mine = probe(net, name, p_new, every=4)
    p0 = probe(net, name, start_sd[name], every=4)
    diff = np.abs(mine.astype(np.float64) - ref)
    tight = np.abs(g_ref) >= 1e-5
    bound = np.where(tight, 32 * ulps(p0, ref, lr), 2 * lr)
    assert np.all(diff <= bound), (name, float(np.max(diff - bound)))


def check_adam_on_nvidia_grads(net, tx, start_sd, f, lr):
  """Our optimizer fed NVIDIA's stored gradients reproduces NVIDIA's step to <= 4 ulp: this is
  where lr, the lazy ratio, the betas and eps are checked (elementwise, so on the probes)."""
  names = [k[6:] for k in f if k.startswith('after/')]
  params = {n: jnp.asarray(probe(net, n, start_sd[n], every=4), jnp.float32) for n in names}
  grads = {n: jnp.asarray(f[f'grad/{n}'][::4] if f'{net}/{n}' in fixture('probes')
                          else f[f'grad/{n}']) for n in names}
  new, _ = ts.apply_update(tx, grads, tx.init(params), params)
  for n in names:
    diff = np.abs(np.asarray(new[n], np.float64) - f[f'after/{n}'])
    assert np.all(diff <= 4 * ulps(params[n], f[f'after/{n}'], lr)), n


# --------------------------------------------------------------------------------------------
# Standalone phases: fresh networks, fresh optimizer, pl_mean 0.


@functools.cache
def run_g_phase(name):
  """Our G phase on the recorded inputs: (loss, metrics, grads, params after, buffers after)."""
  f = fixture(f'step_{name}')
  g_vars, d_vars, _, _ = start()
  main, pl = name in ('Gmain', 'Gboth'), name in ('Greg', 'Gboth')
  cfg = step_config(pl_interval=1 if name == 'Gboth' else 4)
  tx = adam(cfg.pl_interval, cfg.pl_weight)
  phases = ts.Phases(G, D, cfg, noise_mode='const')
  mix_pl = 'mix1' if name == 'Gboth' else 'mix0'
  draws = step_draws(g_main=g_draws(f, '', 'mix0') if main else None,
                     g_pl=g_draws(f, '', mix_pl, rows=N // 2) if pl else None,
                     noise=pl_noise(f) if pl else None)

  @jax.jit
  def run(g_params, g_buffers, d_params, draws):
    (loss, (buffers, metrics, _)), grads = jax.value_and_grad(phases.g_loss, has_aux=True)(
        g_params, g_buffers, d_params, draws, jnp.float32(0), jnp.float32(0), main=main, pl=pl)
    params, _ = ts.apply_update(tx, grads, tx.init(g_params), g_params)
    return loss, metrics, grads, params, buffers

  return run(g_vars['params'], g_vars['buffers'], d_vars['params'], draws), f, tx


@functools.cache
def run_d_phase(name):
  """Our D phase on the recorded inputs: (loss, metrics, real logits, grads, params after,
  G buffers after generating the fakes)."""
  f = fixture(f'step_{name}')
  g_vars, d_vars, _, _ = start()
  main, r1 = name in ('Dmain', 'Dboth'), name in ('Dreg', 'Dboth')
  cfg = step_config(r1_interval=1 if name == 'Dboth' else 16)
  tx = adam(cfg.r1_interval, cfg.r1_gamma)
  phases = ts.Phases(G, D, cfg, noise_mode='const')
  # Dreg runs no generator (its gen_z is ignored).
  draws = step_draws(d_main=g_draws(f, '', 'mix0') if main else None)

  @jax.jit
  def run(g_params, g_buffers, d_params, draws, reals):
    fakes, buffers = phases.d_fakes(g_params, g_buffers, draws) if main else (None, g_buffers)
    (loss, (metrics, real_logits)), grads = jax.value_and_grad(phases.d_loss, has_aux=True)(
        d_params, fakes, draws, reals, jnp.zeros((N, 0)), jnp.float32(0), main=main, r1=r1)
    params, _ = ts.apply_update(tx, grads, tx.init(d_params), d_params)
    return loss, metrics, real_logits, grads, params, buffers

  return run(g_vars['params'], g_vars['buffers'], d_vars['params'], draws, reals(f)), f, tx


# Gradient tolerances of the README: 5e-3 of the tensor's max |g| for Gmain/Gboth (the worst
# conditioned: G's gradients come back through D), 1e-4 for the others.
G_TOL = {'Gmain': 5e-3, 'Greg': 1e-4, 'Gboth': 5e-3}
D_TOL = {'Dmain': 1e-4, 'Dreg': 1e-4, 'Dboth': 1e-4}


@pytest.mark.parametrize('name', list(G_TOL))
def test_generator_phase(name):
  (loss, metrics, grads, params, buffers), f, tx = run_g_phase(name)
  g_sd = start()[2]
  if name != 'Greg':
    np.testing.assert_allclose(metrics['loss/G'], f['stat/Loss/G/loss'], rtol=1e-5)
  if name != 'Gmain':
    np.testing.assert_allclose(metrics['loss/G_pl_penalty'], f['stat/Loss/pl_penalty'], rtol=1e-5)
    np.testing.assert_allclose(metrics['pl_mean'], f['pl_mean_after'], rtol=1e-5)
  np.testing.assert_allclose(buffers['mapping']['w_avg'], f['w_avg_after'], rtol=1e-5, atol=1e-6)
  check_grads('G', grads, f, G_TOL[name])
  check_adam_on_nvidia_grads('G', tx, g_sd, f, float(f['cfg/lr']))
  check_after('G', g_sd, params, f, float(f['cfg/lr']))


@pytest.mark.parametrize('name', list(D_TOL))
def test_discriminator_phase(name):
  (loss, metrics, real_logits, grads, params, buffers), f, tx = run_d_phase(name)
  d_sd = start()[3]
  np.testing.assert_allclose(real_logits, f['report/Loss/scores/real'].reshape(-1), rtol=1e-5,
                             atol=1e-6)
  if name != 'Dreg':
    np.testing.assert_allclose(metrics['loss/D'], f['stat/Loss/D/loss'], rtol=1e-5)
    np.testing.assert_allclose(metrics['scores/fake'], f['stat/Loss/scores/fake'], rtol=1e-5)
    np.testing.assert_allclose(buffers['mapping']['w_avg'], f['w_avg_after'], rtol=1e-5,
                               atol=1e-6)
  if name != 'Dmain':
    np.testing.assert_allclose(metrics['loss/D_r1_penalty'], f['stat/Loss/r1_penalty'],
                               rtol=1e-5)
  check_grads('D', grads, f, D_TOL[name])
  check_adam_on_nvidia_grads('D', tx, d_sd, f, float(f['cfg/lr']))
  check_after('D', d_sd, params, f, float(f['cfg/lr']))


# --------------------------------------------------------------------------------------------
# NVIDIA's first iteration through our whole train_step: Gmain, Greg, Dmain, Dreg in this order,
# each network's two phases sharing one Adam state, then G_ema.


@functools.cache
def run_iter0():
  f = fixture('iter0')
  g_vars, d_vars, _, _ = start()
  cfg = step_config()
  g_tx, d_tx = adam(cfg.pl_interval, cfg.pl_weight), adam(cfg.r1_interval, cfg.r1_gamma)
  state = GANState(
      step=jnp.zeros((), jnp.int32), g_params=g_vars['params'], g_buffers=g_vars['buffers'],
      d_params=d_vars['params'], ema_params=g_vars['params'], ema_buffers=g_vars['buffers'],
      g_opt=g_tx.init(g_vars['params']), d_opt=d_tx.init(d_vars['params']),
      pl_mean=jnp.zeros((), jnp.float32), ada_p=jnp.zeros((), jnp.float32),
      ada_stats=jnp.zeros((2,), jnp.float32), rng=jax.random.PRNGKey(0))
  draws = step_draws(g_main=g_draws(f, 'Gmain/', 'mix0'),
                     g_pl=g_draws(f, 'Greg/', 'mix0', rows=N // 2), noise=pl_noise(f, 'Greg/'),
                     d_main=g_draws(f, 'Dmain/', 'mix0'))
  batch = {'image': reals(f), 'label': jnp.zeros((N,), jnp.int32)}
  step = ts.make_train_step(G, D, g_tx, d_tx, cfg, noise_mode='const')
  new_state, metrics = jax.jit(step, static_argnums=(2, 3))(state, batch, True, True, draws)
  return jax.device_get(new_state), jax.device_get(metrics), f, cfg


def test_first_iteration_losses_and_bookkeeping():
  state, m, f, _ = run_iter0()
  np.testing.assert_allclose(m['loss/G'], f['Gmain/stat/Loss/G/loss'], rtol=1e-5)
  np.testing.assert_allclose(m['loss/G_pl_penalty'], f['Greg/stat/Loss/pl_penalty'], rtol=1e-5)
  np.testing.assert_allclose(m['pl_mean'], f['Greg/pl_mean_after'], rtol=1e-5)
  np.testing.assert_allclose(state.pl_mean, f['Dreg/pl_mean_after'], rtol=1e-5)
  # D's phases see the G updated by Gmain and Greg; their losses drift more (README: 1e-3).
  np.testing.assert_allclose(m['loss/D'], f['Dmain/stat/Loss/D/loss'], rtol=1e-3)
  np.testing.assert_allclose(m['scores/fake'], f['Dmain/stat/Loss/scores/fake'], rtol=1e-3)
  np.testing.assert_allclose(m['scores/real'], f['Dmain/stat/Loss/scores/real'], rtol=1e-3)
  np.testing.assert_allclose(m['loss/D_r1_penalty'], f['Dreg/stat/Loss/r1_penalty'], rtol=1e-3)
  np.testing.assert_allclose(state.g_buffers['mapping']['w_avg'], f['G/mapping.w_avg'],
                             rtol=1e-5, atol=1e-6)
  # cur_nimg 0 with ema_rampup: ema_beta 0, G_ema is a copy of G (buffers included).
  assert float(m['ema_beta']) == float(f['ema/cur_nimg0/beta']) == 0.0
  for a, b in zip(jax.tree_util.tree_leaves((state.ema_params, state.ema_buffers)),
                  jax.tree_util.tree_leaves((state.g_params, state.g_buffers))):
    np.testing.assert_array_equal(a, b)
  assert int(state.g_opt[0].count) == 2 and int(state.d_opt[0].count) == 2  # one Adam each


def iteration_errors(net, params, f, start_sd, lr):
  """|ours - NVIDIA's| / lr of every stored entry after the iteration, by name."""
  return {name: np.abs(probe(net, name, p, every=4).astype(np.float64) - f[f'{net}/{name}']) / lr
          for name, p in nv(params).items()}


def test_first_iteration_parameters():
  """After two Adam steps per network (the second with the lazy beta2) our parameters equal
  NVIDIA's to float32 noise: measured median |diff| 0 (G) and 3e-6 lr (D), 90th percentile
  2e-5 / 1e-4 lr, max 0.5 / 0.006 lr (one G entry whose gradient is below float32 noise: the
  README's coin flip). An unadjusted beta2 (0.99) gives medians 7e-4 / 1.5e-4 lr and 90th
  percentiles 7e-4 / 1.1e-3 lr, so the bounds below catch it."""
  state, _, f, cfg = run_iter0()
  _, _, g_sd, d_sd = start()
  for net, params, sd, interval in (('G', state.g_params, g_sd, cfg.pl_interval),
                                    ('D', state.d_params, d_sd, cfg.r1_interval)):
    lr = LR * interval / (interval + 1)
    errors = iteration_errors(net, params, f, sd, lr)
    err = np.concatenate([e.ravel() for e in errors.values()])
    assert len(errors) == (56 if net == 'G' else 23)
    assert np.median(err) <= 3e-5 and np.percentile(err, 90) <= 3e-4, (net, np.percentile(
        err, [50, 90]))
    assert np.percentile(err, 99.9) <= 1e-2, net
    assert np.max(err) <= 2.0, (net, max(errors, key=lambda k: np.max(errors[k])))


def test_ema_update_with_rampup():
  """G_ema at cur_nimg 400 (ema_kimg 10, rampup 0.05: half-life 20 images, beta 0.5 ** 0.2),
  from NVIDIA's G after the iteration and the starting G_ema (elementwise, on the probes)."""
  f = fixture('iter0')
  g_sd = start()[2]
  cfg = step_config()
  beta = ts.ema_beta(jnp.int32(400 // N), cfg)
  np.testing.assert_allclose(beta, f['ema/cur_nimg400/beta'], rtol=1e-6)
  names = [k[len('ema/cur_nimg400/'):] for k in f if k.startswith('ema/cur_nimg400/')
           and k != 'ema/cur_nimg400/beta']
  assert len(names) == 56
  ema = {n: jnp.asarray(probe('G', n, g_sd[n], every=4)) for n in names}
  g = {n: jnp.asarray(f[f'G/{n}']) for n in names}
  new = ts.ema_update(ema, g, beta)
  for n in names:
    want = f[f'ema/cur_nimg400/{n}']
    diff = np.abs(np.asarray(new[n], np.float64) - want)
    assert np.all(diff <= 2 * np.spacing(np.maximum(np.abs(want), np.abs(g[n])))), n
