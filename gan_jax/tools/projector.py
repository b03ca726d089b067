"""Projector: find the w (or w+) and noise maps that reproduce a target image; also inpainting
(--mask) and super-resolution (--downsample).

  python -m gan_jax.tools.projector --workdir runs/fmnist --target img.png --outdir out/ \
      [--steps 1000] [--w_plus] [--distance inception|pixel] [--seed 303]
  python -m gan_jax.tools.projector --checkpoint exports/ffhq --target face.png --outdir out/ \
      --mask mask.png          # inpainting: white = known pixels, black = the hole to fill
  python -m gan_jax.tools.projector --checkpoint exports/ffhq --target face16.png --outdir out/ \
      --downsample 4           # super-resolution: the target is the 4x smaller image

Writes target.png (what the distance sees: the hole grey, or the low-res target), proj.png (the
projection at full resolution), projected_w.npz (w: (1, num_ws, w_dim), noise/<layer>: the
optimised noise maps, dist: the distance at every step; `synthesize_projection` renders it) and,
unless --no-video, proj.mp4: target | projection at every step.

The optimisation is StyleGAN2-ADA's projector.py: w starts at the mean of 10,000 mapped samples
(RandomState(123)) and w_std is their root mean squared distance to it; Adam (0.9, 0.999) with lr
0.1 ramped up over the first 5% of steps and down (cosine) over the last 25%; Gaussian noise of
scale w_std * 0.05 * max(0, 1 - t / 0.75)^2 added to w at step fraction t; every noise map starts
as N(0, 1), is optimised too, is penalised by 1e5 * the squared autocorrelation at shifts of one
pixel over a pyramid of 2x average poolings down to 8x8, and is renormalised to zero mean and
unit variance after every step. One w is shared by all ws unless --w_plus (one per ws, each
starting at the mean). One jitted function computes a whole step (value_and_grad over w and the
noise maps, the Adam update, the renormalisation); it compiles once per run.

The distance (`gan_jax.tools.perceptual`): NVIDIA's projector uses VGG16-LPIPS, which it downloads
from NVIDIA's servers at run time; that network is not available offline here. The default,
--distance inception, is LPIPS's recipe (unit-normalised channels, squared differences averaged
over positions, summed over scales) on the FID Inception-v3 that the metrics already use (fetched
once by `python -m gan_jax.metrics.fetch`), at four scales from its stem to mixed_3: a
perceptual distance tolerates small shifts and texture noise, so the projection matches what the
target shows rather than its pixel noise (Zhang et al. 2018 found such uniformly weighted deep
features far closer to human judgement than pixel distances); it is the default for the photo
generators (256 px and up) that projection is mostly used on, as NVIDIA chose a perceptual one.
--distance pixel (mean squared error) needs nothing but the generator, runs much faster, and is
what recovers a generated target's w most exactly. For tiny images pixel is the better pick:
Inception then sees a ~10x upsampled image. Measured on the 32x32 Fashion-MNIST run (runs/fmnist,
a real jacket as target, 200 steps, 2 heavily shared CPU cores): pixel took 68 s, inception 585 s,
and the two projections were alike (the silhouette, not the sleeves; inception's smoother); with
a 12-row band masked out, pixel's fill (300 steps) fitted the known rows, inception's did not.

Inpainting: the distance only sees the known pixels (pixel: the MSE over them; inception: against
the target with its hole filled by the current projection, held constant), so the hole's content
in target.png never matters, and proj.png fills it with what the generator finds plausible.
Super-resolution, in the manner of PULSE (Menon et al. 2020): the distance compares the
K-times box-downscaled projection with the low-res target; the projection stays at full
resolution. (PULSE searches on a sphere in latent space; this keeps the projector's priors above.)
"""

import argparse
import dataclasses
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax import traverse_util

from gan_jax import cli_errors
from gan_jax import models
from gan_jax.images import save_png, to_uint8
from gan_jax.tools import cli
from gan_jax.tools import loading
from gan_jax.tools import perceptual
from gan_jax.tools import video


@struct.dataclass
class ProjectorConfig:
  """StyleGAN2-ADA projector.py's defaults (a pytree: the schedule numbers can be traced)."""
  num_steps: int = 1000
  w_avg_samples: int = struct.field(pytree_node=False, default=10000)
  initial_learning_rate: float = 0.1
  initial_noise_factor: float = 0.05
  lr_rampdown_length: float = 0.25
  lr_rampup_length: float = 0.05
  noise_ramp_length: float = 0.75
  regularize_noise_weight: float = 1e5
  w_plus: bool = struct.field(pytree_node=False, default=False)
  downsample: int = struct.field(pytree_node=False, default=1)


def learning_rate(step, cfg: ProjectorConfig):
  """lr at `step` (int or traced): initial lr * cosine rampdown * linear rampup."""
  t = step / cfg.num_steps
  ramp = jnp.minimum(1.0, (1.0 - t) / cfg.lr_rampdown_length)
  ramp = 0.5 - 0.5 * jnp.cos(ramp * jnp.pi)
  return cfg.initial_learning_rate * ramp * jnp.minimum(1.0, t / cfg.lr_rampup_length)


def w_noise_scale(step, cfg: ProjectorConfig, w_std):
  """Scale of the Gaussian noise added to w at `step`."""
  ramp = jnp.maximum(0.0, 1.0 - (step / cfg.num_steps) / cfg.noise_ramp_length)
  return w_std * cfg.initial_noise_factor * jnp.square(ramp)


def _traced(cfg: ProjectorConfig) -> ProjectorConfig:
  """cfg with its schedule numbers as float32 arrays (so they are arguments of the compiled step,
  which then serves any step count or learning rate)."""
  names = ('num_steps', 'initial_learning_rate', 'initial_noise_factor', 'lr_rampdown_length',
           'lr_rampup_length', 'noise_ramp_length', 'regularize_noise_weight')
  return cfg.replace(**{n: jnp.float32(getattr(cfg, n)) for n in names})


def noise_regularization(noise: dict) -> jax.Array:
  """Sum over maps and 2x-pooled scales (down to 8x8) of the squared mean products with the map
  rolled by one pixel along each axis."""
  reg = jnp.float32(0)
  for v in noise.values():
    while True:
      reg += jnp.square(jnp.mean(v * jnp.roll(v, 1, axis=1)))
      reg += jnp.square(jnp.mean(v * jnp.roll(v, 1, axis=0)))
      if v.shape[0] <= 8:
        break
      v = v.reshape(v.shape[0] // 2, 2, v.shape[1] // 2, 2).mean(axis=(1, 3))
  return reg


def normalize_noise(noise: dict) -> dict:
  """Each map to zero mean, unit mean square."""
  out = {}
  for k, v in noise.items():
    v = v - v.mean()
    out[k] = v * jax.lax.rsqrt(jnp.mean(jnp.square(v)))
  return out


def noise_names(variables: dict) -> list[str]:
  """'b8/conv0' ... for every noise_const buffer of the synthesis network."""
  flat = traverse_util.flatten_dict(variables['buffers']['synthesis'])
  return ['/'.join(path[:-1]) for path in flat if path[-1] == 'noise_const']


def with_noise(variables: dict, noise: dict) -> dict:
  """variables with the synthesis noise_const buffers replaced by `noise` (name -> map)."""
  flat = traverse_util.flatten_dict(variables['buffers']['synthesis'])
  for name, v in noise.items():
    flat[tuple(name.split('/')) + ('noise_const',)] = v
  buffers = dict(variables['buffers'], synthesis=traverse_util.unflatten_dict(flat))
  return {'params': variables['params'], 'buffers': buffers}


def w_statistics(g: loading.LoadedGenerator, c: Optional[np.ndarray], num_samples: int,
                 chunk: int = 1000) -> tuple[np.ndarray, float]:
  """(mean w (w_dim,), sqrt(mean squared distance to it, summed over dims)) of the mapped
  RandomState(123) samples, as NVIDIA's projector computes them."""
  z = np.random.RandomState(123).randn(num_samples, g.z_dim).astype(np.float32)
  chunk = min(chunk, num_samples)
  ws = []
  for start in range(0, num_samples, chunk):
    part = z[start:start + chunk]
    pad = chunk - len(part)
    part = np.concatenate([part, np.zeros((pad, g.z_dim), np.float32)]) if pad else part
    labels = None if c is None else np.repeat(c, chunk)
    ws.append(g.mapping(part, labels)[:chunk - pad, 0])
  w = np.concatenate(ws).astype(np.float64)
  w_avg = w.mean(axis=0)
  return w_avg.astype(np.float32), float(np.sqrt(np.sum(np.square(w - w_avg)) / num_samples))


def make_step(module, distance: perceptual.Distance, num_ws: int, downsample: int = 1):
  """(tx, jitted step(opt, opt_state, variables, prepared, hyper, step, key) -> (opt, opt_state,
  stats)).

  opt = {'w': (1, 1 or num_ws, w_dim), 'noise': {name: (r, r)}}; `prepared` is
  distance.prepare(target, mask); hyper = (_traced(cfg), w_std); step is the 0-based step number.
  Adam's lr is applied by the step itself (optax.adam = scale_by_adam, then -lr).
  """
  tx = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)

  def loss_fn(opt, variables, prepared, hyper, step, key):
    cfg, w_std = hyper
    w = opt['w'] + jax.random.normal(key, opt['w'].shape) * w_noise_scale(step, cfg, w_std)
    ws = jnp.broadcast_to(w, (1, num_ws, w.shape[-1]))
    images = module.apply(with_noise(variables, opt['noise']), ws, method='synthesize',
                          **models.family_of(module).noise_kwargs('const'))
    dist = distance(perceptual.box_downscale(images, downsample), prepared)[0]
    reg = noise_regularization(opt['noise'])
    return dist + cfg.regularize_noise_weight * reg, (dist, reg)

  def step_fn(opt, opt_state, variables, prepared, hyper, step, key):
    (loss, (dist, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        opt, variables, prepared, hyper, step, key)
    updates, opt_state = tx.update(grads, opt_state, opt)
    lr = learning_rate(step, hyper[0])
    opt = jax.tree_util.tree_map(lambda p, u: p - lr * u, opt, updates)
    opt = {'w': opt['w'], 'noise': normalize_noise(opt['noise'])}
    return opt, opt_state, {'loss': loss, 'dist': dist, 'reg': reg}

  return tx, jax.jit(step_fn, donate_argnums=(0, 1))


def initial_state(g: loading.LoadedGenerator, cfg: ProjectorConfig, seed: int,
                  class_idx: Optional[int] = None) -> tuple[float, dict]:
  """(w_std, opt): opt['w'] the mean w, (1, num_ws if w_plus else 1, w_dim); opt['noise'] a
  N(0, 1) map per noise buffer, drawn from PRNGKey(seed)."""
  w_avg, w_std = w_statistics(g, cli.class_label(g, class_idx), cfg.w_avg_samples)
  names = noise_names(g.variables)
  flat = traverse_util.flatten_dict(g.variables['buffers']['synthesis'])
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 0), len(names))
  noise = {n: jax.random.normal(k, flat[tuple(n.split('/')) + ('noise_const',)].shape)
           for n, k in zip(names, keys)}
  return w_std, {'w': jnp.asarray(np.tile(w_avg, (1, g.num_ws if cfg.w_plus else 1, 1))),
                 'noise': noise}


@dataclasses.dataclass
class Projection:
  """ws: (num_steps, num_ws, w_dim), the w after every step (the last is the result);
  noise: the final noise maps; dist, loss: per step (before its update)."""
  ws: np.ndarray
  noise: dict[str, np.ndarray]
  dist: np.ndarray
  loss: np.ndarray


def project(g: loading.LoadedGenerator, target: np.ndarray, mask: Optional[np.ndarray] = None,
            cfg: ProjectorConfig = ProjectorConfig(),
            distance: Optional[perceptual.Distance] = None, seed: int = 303,
            class_idx: Optional[int] = None, log_every: int = 0) -> Projection:
  """Projects `target` (1, h, w, C) float in the generator's range, h = resolution / downsample;
  mask (1, h, w, 1) of 0/1 or None."""
  distance = distance or perceptual.Distance('pixel')
  k = cfg.downsample
  want = (1, g.img_resolution // k, g.img_resolution // k, g.img_channels)
  if g.img_resolution % k or tuple(target.shape) != want:
    raise cli_errors.UserError(
        f'target must be {want} (resolution {g.img_resolution} / downsample {k}), '
        f'got {target.shape}')
  if mask is not None and tuple(mask.shape) != want[:3] + (1,):
    raise cli_errors.UserError(f'mask must be {want[:3] + (1,)}, got {mask.shape}')
  if mask is not None and not np.any(mask):
    raise cli_errors.UserError('the mask marks no pixel as known (white = known, black = hole)')
  w_std, opt = initial_state(g, cfg, seed, class_idx)
  key = jax.random.PRNGKey(seed)
  cache_key = (id(g.module), g.num_ws, k)  # one trace per generator module and shape, not per call
  if distance.compiled_steps.get(cache_key, (None,))[0] is not g.module:
    distance.compiled_steps[cache_key] = (g.module,) + make_step(g.module, distance, g.num_ws, k)
  _, tx, step_fn = distance.compiled_steps[cache_key]
  opt_state = tx.init(opt)
  prepared = distance.prepare(target, mask)
  hyper = (_traced(cfg), jnp.float32(w_std))
  ws, dists, losses = [], [], []
  for step in range(cfg.num_steps):
    opt, opt_state, stats = step_fn(opt, opt_state, g.variables, prepared, hyper,
                                    jnp.float32(step), jax.random.fold_in(key, step + 1))
    ws.append(np.broadcast_to(np.asarray(opt['w'])[0], (g.num_ws, g.w_dim)))
    dists.append(float(stats['dist']))
    losses.append(float(stats['loss']))
    if log_every and ((step + 1) % log_every == 0 or step == 0):
      print(f'step {step + 1:>5d}/{cfg.num_steps}: dist {dists[-1]:.5f} loss {losses[-1]:.5f}',
            flush=True)
  return Projection(np.stack(ws), {n: np.asarray(v) for n, v in opt['noise'].items()},
                    np.array(dists), np.array(losses))


def render(g: loading.LoadedGenerator, ws: np.ndarray, noise: dict) -> np.ndarray:
  """float images (N, H, W, C) of ws (N, num_ws, w_dim) with the given noise maps, one at a
  time (one compiled executable)."""
  variables = with_noise(g.variables, {n: jnp.asarray(v) for n, v in noise.items()})
  synth = jax.jit(lambda v, w: g.module.apply(v, w, method='synthesize',
                                              **g.family.noise_kwargs('const')))
  return np.concatenate([np.asarray(synth(variables, w[None].astype(np.float32)))
                         for w in np.asarray(ws)])


def save_projection(path: str, projection: Projection) -> None:
  np.savez(path, w=projection.ws[-1:].astype(np.float32), dist=projection.dist,
           **{f'noise/{n}': v for n, v in projection.noise.items()})


def synthesize_projection(g: loading.LoadedGenerator, path: str) -> np.ndarray:
  """The float image (1, H, W, C) of a projected_w.npz."""
  with np.load(path) as data:
    noise = {k[len('noise/'):]: data[k] for k in data.files if k.startswith('noise/')}
    return render(g, data['w'], noise)


def _square(image: Any, size: int, resample: int, what: str):
  """PIL image center-cropped to a square and resized to size x size (with a note)."""
  w, h = image.size
  s = min(w, h)
  if (w, h) != (size, size):
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    image = image.resize((size, size), resample)
    print(f'{what}: {w}x{h} center-cropped to {s}x{s} and resized to {size}x{size}')
  return image


def load_target(path: str, resolution: int, channels: int, downsample: int = 1) -> np.ndarray:
  """(1, r, r, C) float32 in the generator's range ((u8 - 128) / 127.5), r = resolution /
  downsample. A full-resolution target with --downsample is box-downscaled exactly as the
  distance models it; other sizes are center-cropped and Lanczos-resized."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = image.convert('L' if channels == 1 else 'RGB')
    size = resolution // downsample
    full = downsample > 1 and image.size == (resolution, resolution)
    image = _square(image, resolution if full else size, Image.LANCZOS, f'target {path}')
    x = np.asarray(image, np.float32).reshape(1, image.size[1], image.size[0], channels)
  x = (x - 128.0) / 127.5
  if full:
    print(f'target {path}: full resolution, box-downscaled {downsample}x to {size}x{size}')
    x = np.asarray(perceptual.box_downscale(jnp.asarray(x), downsample))
  return x


def load_mask(path: str, size: int) -> np.ndarray:
  """(1, size, size, 1) float32: 1 where the PNG is >= 128 (known), 0 in the hole."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = _square(image.convert('L'), size, Image.NEAREST, f'mask {path}')
    return (np.asarray(image) >= 128).astype(np.float32)[None, :, :, None]


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
  """Runs the command line; returns the paths written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.projector',
                                   description='Project an image into the generator\'s W space.')
  cli.add_generator_args(parser)
  parser.add_argument('--target', required=True, help='target image (PNG/JPEG)')
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--w_plus', action='store_true', help='optimise one w per ws (W+)')
  parser.add_argument('--distance', choices=perceptual.DISTANCES, default='inception')
  parser.add_argument('--inception-weights', default=None,
                      help='default_1.pt (default: the cache of python -m gan_jax.metrics.fetch)')
  parser.add_argument('--mask', default=None, help='inpainting: white = known, black = hole')
  parser.add_argument('--downsample', type=int, default=1,
                      help='super-resolution: the target is the K-times box-downscaled image')
  parser.add_argument('--seed', type=int, default=303, help='noise-map init and w noise')
  parser.add_argument('--w-avg-samples', type=int, default=10000)
  parser.add_argument('--no-video', action='store_true')
  parser.add_argument('--video', default='proj.mp4', help='video name in outdir (.mp4 or .gif)')
  parser.add_argument('--fps', type=float, default=30)
  args = parser.parse_args(argv)

  if args.steps < 1 or args.downsample < 1 or args.w_avg_samples < 1:
    parser.error('--steps, --downsample and --w-avg-samples must be >= 1')
  if not args.no_video:
    video.check_video_path(args.video)
  g = cli.load_generator(parser, args)
  if g.img_resolution % args.downsample:
    parser.error(f'--downsample {args.downsample} does not divide the resolution '
                 f'{g.img_resolution}')
  target = load_target(args.target, g.img_resolution, g.img_channels, args.downsample)
  mask = None if args.mask is None else load_mask(args.mask, target.shape[1])
  params = None
  if args.distance == 'inception':
    from gan_jax.metrics import inception  # pylint: disable=g-import-not-at-top
    params = inception.load_params(args.inception_weights)
  cfg = ProjectorConfig(num_steps=args.steps, w_avg_samples=args.w_avg_samples,
                        w_plus=args.w_plus, downsample=args.downsample)
  projection = project(g, target, mask, cfg, perceptual.Distance(args.distance, params),
                       args.seed, args.class_idx, log_every=max(1, args.steps // 20))

  os.makedirs(args.outdir, exist_ok=True)
  shown = target if mask is None else target * mask  # the hole shows as 0: mid grey
  written = [os.path.join(args.outdir, n) for n in ('target.png', 'proj.png', 'projected_w.npz')]
  save_png(written[0], to_uint8(shown)[0])
  images = to_uint8(render(g, projection.ws if not args.no_video else projection.ws[-1:],
                           projection.noise))
  save_png(written[1], images[-1])
  save_projection(written[2], projection)
  if not args.no_video:
    k = args.downsample
    left = np.repeat(np.repeat(to_uint8(shown)[0], k, axis=0), k, axis=1)
    written.append(os.path.join(args.outdir, args.video))
    video.write_video(written[-1], [np.concatenate([left, image], axis=1) for image in images],
                      args.fps)
  print(f'dist {projection.dist[0]:.5f} -> {projection.dist[-1]:.5f}; wrote '
        f'{", ".join(os.path.basename(p) for p in written)} to {args.outdir}')
  return written


if __name__ == '__main__':
  cli_errors.run(main)
