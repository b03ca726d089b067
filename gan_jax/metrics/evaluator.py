"""Computes metrics (`gan_jax.metrics.registry` names) for a generator, sharded over a mesh.

  evaluator = Evaluator(config.data, mesh)
  results = evaluator.evaluate(G, {'params': ..., 'buffers': ...}, ['fid50k_full', 'kid50k_full'])
  # {'fid50k_full': 4.1, 'kid50k_full': 0.0012}

`COMPUTE` is the registry: metric family -> function. Generated images come from the generator
with noise_mode 'random' and truncation 1 (as NVIDIA's metrics), latents from a fixed seed, and
are mapped to uint8 as NVIDIA does: clip(x * 127.5 + 128, 0, 255). Conditional generators get
labels drawn uniformly over the classes. Real images are the first N images of the config's
split (not flipped), their statistics cached (see `features.real_stats`). Generated features
of one count are computed once per `evaluate` call and shared by the metrics that use them.

A growing generator (ProGAN, StyleGAN: `models.family_of(G).grows`) is evaluated as it is at
that point of its schedule: `evaluate(..., stage=16, alpha=0.5)` makes stage x stage images
faded in by alpha (G.apply(..., stage=, alpha=), as in training) and nearest-upsamples them
(`layers.upsample_nearest`) to G's full resolution, the dataset's. The real statistics are those
of the full-resolution reals all run long, so numbers taken at different stages compare with each
other and with the finished network's. This is what NVIDIA's code does: its growing generators
(progressive_growing_of_gans networks.py G_paper, stylegan networks_stylegan.py G_synthesis)
always output full-size images, the current lod nearest-upscaled (`upscale2d`, a tile), with
the lod kept in G_ema; stylegan's training_loop.py runs its metrics on every network snapshot,
mid-growth included (progressive_growing_of_gans' util_scripts.evaluate_metrics, every snapshot
of a run afterwards), against full-resolution reals. stage None (or the full resolution with
alpha 1) is the full network; a generator that does not grow accepts only that.
"""

import time
from typing import Callable, Mapping, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import models
from gan_jax import sharding
from gan_jax.metrics import equivariance
from gan_jax.metrics import features as features_lib
from gan_jax.metrics import fetch
from gan_jax.metrics import frechet
from gan_jax.metrics import inception
from gan_jax.metrics import ppl as ppl_lib
from gan_jax.metrics import precision_recall
from gan_jax.metrics import registry
from gan_jax.models import layers

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def to_uint8(images: jax.Array) -> jax.Array:
  """Generator output -> uint8 as NVIDIA's metrics: clip(x * 127.5 + 128, 0, 255)."""
  return jnp.clip(images * 127.5 + 128, 0, 255).astype(jnp.uint8)


def growth_kwargs(G, stage: Optional[int] = None, alpha: Optional[float] = None) -> dict:
  """{'stage', 'alpha'} to evaluate G at that point of its growth, or {} for the full network.

  stage: a resolution (a power of two from 4 to G.img_resolution), None: the full one; alpha:
  the fade-in of that stage's block in [0, 1] (None: 1). The full resolution at alpha 1 is the
  full network ({}), so a finished run's numbers are those of a fixed-resolution evaluation.
  ValueError for a bad stage or alpha, or a stage below the full one for a G that does not grow.
  """
  if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f'alpha must lie in [0, 1], got {alpha}')
  if stage is None:
    if alpha is not None and float(alpha) != 1.0:
      raise ValueError(f'alpha {alpha} without a stage: give the stage it fades in')
    return {}
  stage = int(stage)
  if stage < 4 or stage > G.img_resolution or stage & (stage - 1):
    raise ValueError(f'stage must be a power of two from 4 to G\'s resolution '
                     f'{G.img_resolution}, got {stage}')
  alpha = 1.0 if alpha is None else float(alpha)
  if stage == G.img_resolution and alpha == 1.0:
    return {}
  family = models.family_of(G)
  if not family.grows:
    raise ValueError(f'a {family.title} generator does not grow: it has no stage {stage} / '
                     f'alpha {alpha}, only its full {G.img_resolution}x{G.img_resolution}')
  return {'stage': stage, 'alpha': alpha}


def upsample_to_full(G, images: jax.Array) -> jax.Array:
  """Images of a stage, nearest-upsampled to G's full resolution (as the training grids)."""
  return layers.upsample_nearest(images, G.img_resolution // images.shape[1])


class Evaluator:
  """Metrics of generators on one dataset split, over the devices of `mesh`.

  Args:
    data_config: `config.data` of the real images.
    mesh: the device mesh (all devices of all processes: `sharding.make_mesh`).
    batch_size: global batch of the feature network (rounded up to a multiple of the mesh).
    weights: FID Inception weights path (None: the cached `python -m gan_jax.metrics.fetch`).
    cache_dir: real-statistics cache (None: ~/.cache/gan_jax/stats).
    max_images: cap on every metric's image counts, for smoke tests (None: the metric's own).
    seed: latents and noise of the generated images derive from it.
    extractor: a ready `features.Extractor` (tests pass a cheap network).
  """

  def __init__(self, data_config, mesh, batch_size: int = 64, weights=None, cache_dir=None,
               max_images: Optional[int] = None, seed: int = 0,
               extractor: Optional[features_lib.Extractor] = None):
    self.data_config = data_config
    self.mesh = mesh
    if extractor is None:
      path = fetch.weights_path(weights)
      extractor = features_lib.Extractor(mesh, inception.load_params(path), batch_size,
                                         network_hash=fetch.sha1_of(path))
    self.extractor = extractor
    self.cache_dir = cache_dir
    self.max_images = max_images
    self.seed = seed
    self._reals: dict = {}
    self._capture: set = set()
    self._builder = None

  # ------------------------------------------------------------------------------------------
  # Inputs.

  def builder(self):
    if self._builder is None:
      from gan_jax.data import pipeline  # pylint: disable=g-import-not-at-top
      self._builder = pipeline.load_builder(self.data_config)
    return self._builder

  def real(self, num_items: Optional[int], capture_all: bool) -> frechet.FeatureStats:
    """Real statistics (from the disk cache, else computed), kept for this evaluator's life."""
    capture_all = capture_all or num_items in self._capture
    for capture in ((True, False) if not capture_all else (True,)):
      if (num_items, capture) in self._reals:
        return self._reals[(num_items, capture)]
    stats = features_lib.real_stats(self.data_config, num_items, self.extractor, capture_all,
                                    self.cache_dir, builder=self.builder())
    self._reals[(num_items, capture_all)] = stats
    return stats

  def _latents(self, G, index: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of global batch `index`: z (n, z_dim), c (n, c_dim)."""
    n = self.extractor.batch_size
    rng = np.random.default_rng([self.seed, index])
    z = rng.standard_normal((n, G.z_dim)).astype(np.float32)
    c = (np.eye(G.c_dim, dtype=np.float32)[rng.integers(0, G.c_dim, n)] if G.c_dim
         else np.zeros((n, 0), np.float32))
    rows = self.extractor.local_rows()
    return z[rows], c[rows]

  def fake(self, G, variables, num_items: int, stage: Optional[int] = None,
           alpha: Optional[float] = None) -> frechet.FeatureStats:
    """Features of `num_items` generated images (captured), batch by batch over the mesh; a
    growing G at `stage` / `alpha` (see `growth_kwargs`), upsampled to its full resolution."""
    rep = sharding.replicated(self.mesh)
    bshard = self.extractor.batch_sharding
    grow = growth_kwargs(G, stage, alpha)
    noise = models.family_of(G).noise_kwargs('random')

    def generate(variables, z, c, rng, alpha):
      at = {'stage': grow['stage'], 'alpha': alpha} if grow else {}
      return to_uint8(upsample_to_full(G, G.apply(variables, z, c, rngs={'noise': rng}, **noise,
                                                   **at)))

    generate = jax.jit(generate, in_shardings=(rep, bshard, bshard, rep, rep),
                       out_shardings=bshard)
    variables = jax.device_put(variables, rep)
    alpha = jax.device_put(jnp.float32(grow.get('alpha', 1.0)), rep)

    def batches():
      for index in range(-(-num_items // self.extractor.batch_size)):
        z, c = self._latents(G, index)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), index)
        yield generate(variables, self.extractor.global_batch(z), self.extractor.global_batch(c),
                       key, alpha)

    return self.extractor.accumulate(batches(), num_items, capture_all=True, what='generated')

  # ------------------------------------------------------------------------------------------
  # Metrics.

  def evaluate(self, G, variables: Mapping, names: Sequence[str], stage: Optional[int] = None,
               alpha: Optional[float] = None) -> dict[str, float]:
    """{result name: value} for the metric `names` (registry names) of generator G (a Flax
    Generator) with `variables` ({'params', 'buffers'}); a growing G as it is at `stage` and
    `alpha` (None: the full network; see `growth_kwargs` and the module docstring)."""
    specs = [registry.parse(n).capped(self.max_images) if isinstance(n, str) else n
             for n in names]
    grow = growth_kwargs(G, stage, alpha)  # bad values fail before anything is computed
    if grow:
      logging.info('Evaluating G at stage %dx%d, alpha %.4f, upsampled to %dx%d', grow['stage'],
                   grow['stage'], grow['alpha'], G.img_resolution, G.img_resolution)
    # Real sets that KID or PR need whole are captured once, and FID of that count reuses them.
    self._capture = {s.num_real for s in specs if s.family in ('kid', 'pr')}
    fakes: dict[int, frechet.FeatureStats] = {}
    results = {}
    for spec in specs:
      start = time.time()
      values = COMPUTE[spec.family](self, spec, G, variables, fakes, grow)
      for key, value in zip(spec.result_names, values):
        results[key] = value
        logging.info('%s = %.6g  (%.0f s)', key, value, time.time() - start)
    return results

  def fakes_for(self, spec, G, variables, fakes: dict, grow: Mapping) -> frechet.FeatureStats:
    """The generated features of `spec`'s count, computed once per `evaluate` call."""
    if spec.num_gen not in fakes:
      fakes[spec.num_gen] = self.fake(G, variables, spec.num_gen, **grow)
    return fakes[spec.num_gen]


def compute_fid(evaluator: Evaluator, spec, G, variables, fakes, grow) -> tuple[float]:
  real = evaluator.real(spec.num_real, capture_all=False)
  fake = evaluator.fakes_for(spec, G, variables, fakes, grow)
  return (frechet.frechet_distance(*real.mean_cov(), *fake.mean_cov()),)


def compute_kid(evaluator: Evaluator, spec, G, variables, fakes, grow) -> tuple[float]:
  real = evaluator.real(spec.num_real, capture_all=True)
  fake = evaluator.fakes_for(spec, G, variables, fakes, grow)
  return (frechet.kernel_inception_distance(real.all_features(), fake.all_features(),
                                            KID_SUBSETS, KID_SUBSET_SIZE),)


def compute_pr(evaluator: Evaluator, spec, G, variables, fakes, grow) -> tuple[float, float]:
  real = evaluator.real(spec.num_real, capture_all=True)
  fake = evaluator.fakes_for(spec, G, variables, fakes, grow)
  return precision_recall.precision_recall(real.all_features(), fake.all_features(), spec.k)


def compute_ppl(evaluator: Evaluator, spec, G, variables, fakes, grow) -> tuple[float]:
  """Path length in W; a growing StyleGAN at `grow`'s stage and alpha walks the same W and
  synthesises at that stage, upsampled to the full resolution as for FID. ProGAN has no W space:
  ValueError."""
  del fakes
  if spec.space != 'w':
    raise ValueError(f'{spec.name}: only path lengths in W are implemented')
  family = models.family_of(G)
  if not family.w_space:
    raise ValueError(f'{spec.name}: path length walks the W space; a {family.title} generator '
                     'has none, at any stage (fid, kid and pr work)')
  extractor = evaluator.extractor
  rep, bshard = sharding.replicated(evaluator.mesh), extractor.batch_sharding
  sample = jax.jit(ppl_lib.make_sampler(G, extractor.params, spec.epsilon, spec.sampling,
                                        spec.crop, stage=grow.get('stage')),
                   in_shardings=(rep, bshard, bshard, bshard, rep, rep), out_shardings=rep)
  variables = jax.device_put(variables, rep)
  alpha = jax.device_put(jnp.float32(grow.get('alpha', 1.0)), rep)
  n = extractor.batch_size
  distances = []
  progress = features_lib.Progress(spec.name, spec.num_gen)
  for index in range(-(-spec.num_gen // n)):
    rng = np.random.default_rng([evaluator.seed, 1 << 20, index])
    z = rng.standard_normal((2, n, G.z_dim)).astype(np.float32)
    c = (np.eye(G.c_dim, dtype=np.float32)[rng.integers(0, G.c_dim, n)] if G.c_dim
         else np.zeros((n, 0), np.float32))
    rows = extractor.local_rows()
    key = jax.random.fold_in(jax.random.PRNGKey(evaluator.seed + 1), index)
    d = sample(variables, extractor.global_batch(z[0][rows]), extractor.global_batch(z[1][rows]),
               extractor.global_batch(c[rows]), key, alpha)
    distances.append(np.asarray(d))
    progress.update(min(n, spec.num_gen - index * n))
  return (ppl_lib.aggregate(np.concatenate(distances)[:spec.num_gen]),)


def compute_eq(evaluator: Evaluator, spec, G, variables, fakes, grow) -> tuple[float]:
  """StyleGAN3's equivariance PSNR (`gan_jax.metrics.equivariance`); other generators have no
  input transform: ValueError, as NVIDIA's code."""
  del fakes, grow
  equivariance.check_generator(G, spec.name)
  return (equivariance.compute(G, variables, spec.transform, spec.num_gen, evaluator.seed),)


# The registry: metric family -> fn(evaluator, spec, G, variables, fakes, grow) -> values, one
# per `spec.result_names` (grow: `growth_kwargs`, {} for the full network).
COMPUTE: Mapping[str, Callable] = {
    'fid': compute_fid,
    'kid': compute_kid,
    'pr': compute_pr,
    'ppl': compute_ppl,
    'eq': compute_eq,
}
