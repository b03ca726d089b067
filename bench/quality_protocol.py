"""NVIDIA's quality protocol (issue 16): train experiments/fashion_mnist.py:nvidia32, score fid2k.

  python bench/quality_protocol.py --seeds 0            # train 10 kimg into runs/quality/...
  python bench/quality_protocol.py --seeds 0,1,2        # one run per seed, then the summary
  python bench/quality_protocol.py --seeds 0 --kimg 0   # the untrained generator (step 0)
  python bench/quality_protocol.py --summary            # mean / min / max of the results file
  python bench/quality_protocol.py --set data.data_dir=/data/tfds   # any config override

Each seed trains with the product itself (`python -m gan_jax.main`, the checkout's code) into
<root>/kimg<K>_seed<S> (a finished workdir is not trained again: the run resumes at its end),
then scores fid2k as NVIDIA's protocol does:

  * generated: G_ema of the last checkpoint, one image per seed 0 .. 1999, z of seed s =
    np.random.RandomState(s).randn(1, z_dim) (NVIDIA's generate.py), truncation psi 1,
    noise_mode 'const', mapped to uint8 by clip(x * 127.5 + 128, 0, 255);
  * real: the first 2,000 images of the Fashion-MNIST *test* split, from the same builder as the
    training data (28x28 zero-padded to 32x32, one channel, not flipped); their Inception
    statistics are cached on disk (~/.cache/gan_jax/stats) so later runs skip them;
  * FID with the repo's Inception port (gan_jax.metrics; one channel repeated to three, as
    NVIDIA's metrics do) and NVIDIA's covariance (divided by N).

--kimg 0 scores the state training starts from (`state.create` with PRNGKey(seed), as
gan_jax.train initialises it; G_ema equals G there). Each run appends one JSON line (seed, kimg,
step, fid2k, train / score / wall seconds, commit, `speckle`) to --results, writes the first 64
scored images to <workdir>/fid_samples.png, and the script ends with the summary over the seeds
of the results file that share this invocation's kimg, commit, config and noise setting.

`speckle` (issue 16: gan_jax's samples showed high-frequency speckle where NVIDIA's showed soft
blobs): G_ema's learned noise_strength per layer, and the high-frequency energy
(`laplacian_energy`) of the first 64 scored images, of the same images without the noise inputs,
and of the first 64 real test images. --no_noise scores G_ema with every noise_strength set to 0
(an ablation, not the protocol: what the per-pixel noise inputs cost or add); its rows carry
"noise": "off" and are summarised apart.
"""

import argparse
import ast
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import time
from typing import Iterator, Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from gan_jax import config_base
from gan_jax import images as images_lib
from gan_jax import optim
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import pipeline
from gan_jax.metrics import evaluator as evaluator_lib
from gan_jax.metrics import features as features_lib
from gan_jax.metrics import fetch
from gan_jax.metrics import frechet
from gan_jax.metrics import inception
from gan_jax.tools import export

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = 'experiments/fashion_mnist.py:nvidia32'
NUM_IMAGES = 2000  # fid2k
REAL_SPLIT = 'test'
SAMPLE_GRID = 64  # scored images saved as <workdir>/fid_samples.png


def seed_latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
  """float32 (len(seeds), z_dim): row i = np.random.RandomState(seeds[i]).randn(1, z_dim), the
  z that NVIDIA's generate.py draws for that seed."""
  return np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds]
                        ).astype(np.float32)


def metric_name(num_images: int) -> str:
  return f'fid{num_images // 1000}k' if num_images % 1000 == 0 else f'fid{num_images}'


def git_commit() -> str:
  """Short hash of the checkout's HEAD, '+dirty' when tracked files differ from it."""
  def git(*args):
    return subprocess.run(['git', '-C', str(REPO), *args], capture_output=True, text=True,
                          check=False).stdout.strip()
  commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
  return commit + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


# --------------------------------------------------------------------------------------------
# Generators.


def train_workdir(config_spec: str, workdir: Path, seed: int, kimg: float,
                  overrides: Sequence[str] = ()) -> None:
  """Trains with `python -m gan_jax.main` (this checkout's gan_jax); resumes a started run."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  command = [sys.executable, '-m', 'gan_jax.main', '--config', str(REPO / config_spec),
             '--workdir', str(workdir), f'--config.seed={seed}', f'--config.schedule.kimg={kimg}',
             *overrides]
  logging.info('training: %s', ' '.join(command))
  subprocess.run(command, cwd=REPO, env=env, check=True)


def untrained_generator(config):
  """(G, G_ema variables) of the state gan_jax.train starts from for `config` (step 0)."""
  G, D, c_dim = train.build(config, pipeline.dataset_info(config.data))
  g_tx, d_tx = optim.make_optimizers(config)
  state = jax.jit(lambda key: state_lib.create(G, D, g_tx, d_tx, c_dim, key, config.augment.p))(
      jax.random.PRNGKey(config.seed))
  return G, {'params': state.ema_params, 'buffers': state.ema_buffers}


def without_noise(variables: dict) -> dict:
  """G's variables with every `noise_strength` set to 0, the rest unchanged: the generator minus
  its per-pixel noise inputs (noise_mode 'const' then gives what 'none' gives)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: np.zeros_like(x) if _is_noise_strength(path) else x, variables)


def noise_strengths(variables: dict) -> dict:
  """{'b32/conv1': strength, ...}: the learned scale of each synthesis layer's noise input."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(variables['params'])[0]:
    if _is_noise_strength(path):
      names = [str(getattr(k, 'key', k)) for k in path]
      out['/'.join(names[-3:-1])] = float(x)
  return out


def _is_noise_strength(path) -> bool:
  return bool(path) and str(getattr(path[-1], 'key', path[-1])) == 'noise_strength'


def laplacian_energy(images: np.ndarray) -> float:
  """Mean over images, interior pixels and channels of the squared 5-point Laplacian
  (4 x[i, j] - x[i-1, j] - x[i+1, j] - x[i, j-1] - x[i, j+1]) of NHWC images, in their own units
  (grey levels for uint8): the high-frequency energy that pixel speckle raises."""
  x = np.asarray(images, np.float64)
  lap = (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2]
         - x[:, 1:-1, 2:])
  return float(np.mean(np.square(lap)))


def speckle_report(G, variables, data_config, num_images: int = SAMPLE_GRID) -> dict:
  """G_ema's noise strengths and the Laplacian energy of its images for seeds 0 .. num - 1 (as
  scored, and without the noise inputs) beside that of the first num real test images (all of
  them if the split is smaller)."""
  fakes = next(generated_images(G, variables, list(range(num_images)), num_images))
  quiet = next(generated_images(G, without_noise(variables), list(range(num_images)), num_images))
  source = pipeline.load_builder(real_data_config(data_config)).as_data_source(REAL_SPLIT)
  reals = np.stack([source[i]['image'] for i in range(min(num_images, len(source)))])
  return {'laplacian_fake': laplacian_energy(fakes), 'laplacian_fake_no_noise':
          laplacian_energy(quiet), 'laplacian_real': laplacian_energy(reals),
          'noise_strength': noise_strengths(variables)}


def generated_images(G, variables, seeds: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
  """uint8 NHWC images of `seeds`, `batch_size` at a time: psi 1, noise_mode 'const'."""
  if G.c_dim:
    raise ValueError('the protocol scores unconditional generators (c_dim 0)')

  @jax.jit
  def generate(variables, z):
    c = np.zeros((z.shape[0], 0), np.float32)
    return evaluator_lib.to_uint8(G.apply(variables, z, c, truncation_psi=1.0,
                                          noise_mode='const'))

  variables = jax.device_put(variables)
  for start in range(0, len(seeds), batch_size):
    z = seed_latents(seeds[start:start + batch_size], G.z_dim)
    yield np.asarray(generate(variables, z))


# --------------------------------------------------------------------------------------------
# Scoring.


def make_extractor(batch_size: int, weights: Optional[str] = None) -> features_lib.Extractor:
  """The FID Inception network over all local devices (weights: the cached fetch by default)."""
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1}))
  path = fetch.weights_path(weights)
  return features_lib.Extractor(mesh, inception.load_params(path), batch_size,
                                network_hash=fetch.sha1_of(path))


def real_data_config(data_config) -> ml_collections.ConfigDict:
  """The training data's config on the test split, unflipped."""
  config = ml_collections.ConfigDict(data_config.to_dict())
  config.split = REAL_SPLIT
  config.xflip = False
  return config


def real_stats(data_config, extractor, num_images: int, cache_dir=None) -> frechet.FeatureStats:
  """Statistics of the first `num_images` test images (cached on disk by the repo's cache)."""
  real_config = real_data_config(data_config)
  builder = pipeline.load_builder(real_config)
  available = len(builder.as_data_source(REAL_SPLIT))
  if available < num_images:
    raise ValueError(f'{real_config.name}/{REAL_SPLIT} has {available} images, fewer than '
                     f'{num_images}')
  return features_lib.real_stats(real_config, num_images, extractor, cache_dir=cache_dir,
                                 builder=builder)


def score(G, variables, data_config, extractor, num_images: int = NUM_IMAGES, cache_dir=None,
          grid_path: Optional[Path] = None) -> float:
  """FID of G's images for seeds 0 .. num_images - 1 against the first num_images test images."""
  info = pipeline.dataset_info(real_data_config(data_config))
  if (info.resolution, info.channels) != (G.img_resolution, G.img_channels):
    raise ValueError(f'G makes {G.img_resolution}x{G.img_resolution}x{G.img_channels} images, '
                     f'the data is {info.resolution}x{info.resolution}x{info.channels}')
  real = real_stats(data_config, extractor, num_images, cache_dir)
  batches = generated_images(G, variables, list(range(num_images)), extractor.batch_size)
  if grid_path is not None:
    first = next(batches)
    images_lib.save_png(grid_path, images_lib.make_grid(first[:SAMPLE_GRID], 8))
    batches = _chain([first], batches)
  fake = extractor.accumulate(batches, num_images, what='generated (seeds)')
  return frechet.frechet_distance(*real.mean_cov(), *fake.mean_cov())


def _chain(*iterables):
  for iterable in iterables:
    yield from iterable


# --------------------------------------------------------------------------------------------
# Runs and results.


def parse_overrides(items: Sequence[str]) -> dict:
  """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'} (Python literals, else the string)."""
  overrides = {}
  for item in items:
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--set wants KEY=VALUE, got {item!r}')
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text
  return overrides


def run_seed(args, seed: int, extractor, commit: str) -> dict:
  """Trains (kimg > 0) and scores one seed; returns its result row."""
  overrides = dict(parse_overrides(args.set), seed=seed, **{'schedule.kimg': args.kimg})
  config = config_base.load(str(REPO / args.config), overrides)
  start = time.time()
  workdir = Path(args.root).resolve() / f'kimg{args.kimg:g}_seed{seed}'
  if args.kimg > 0:
    train_workdir(args.config, workdir, seed, args.kimg,
                  [f'--config.{item}' for item in args.set])
    train_s = time.time() - start
    G, variables, step = export.restore_workdir(workdir)
    if step != train.total_steps(config):
      raise RuntimeError(f'{workdir}: last checkpoint at step {step}, the run has '
                         f'{train.total_steps(config)}')
  else:
    train_s, step = 0.0, 0
    G, variables = untrained_generator(config)
    workdir.mkdir(parents=True, exist_ok=True)
  if args.no_noise:
    variables = without_noise(variables)
  score_start = time.time()
  grid = workdir / ('fid_samples_no_noise.png' if args.no_noise else 'fid_samples.png')
  value = score(G, variables, config.data, extractor, args.num_images, args.cache_dir,
                grid_path=grid)
  end = time.time()
  return {'seed': seed, 'kimg': args.kimg, 'step': step, metric_name(args.num_images): value,
          'train_s': round(train_s, 1), 'score_s': round(end - score_start, 1),
          'wall_s': round(end - start, 1), 'commit': commit, 'config': args.config,
          'overrides': list(args.set), 'noise': 'off' if args.no_noise else 'on',
          'speckle': speckle_report(G, variables, config.data), 'workdir': str(workdir),
          'finished': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}


def summarize(rows: Sequence[dict], name: str) -> dict:
  """mean / min / max of `name` over the rows (the last row of each seed counts)."""
  by_seed = {row['seed']: row[name] for row in rows if name in row}
  values = list(by_seed.values())
  if not values:
    return {'metric': name, 'seeds': []}
  return {'metric': name, 'seeds': sorted(by_seed), 'mean': statistics.fmean(values),
          'min': min(values), 'max': max(values)}


def read_results(path: Path) -> list[dict]:
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', default='0', help='comma-separated training seeds')
  parser.add_argument('--kimg', type=float, default=10.0, help='training length (0: untrained)')
  parser.add_argument('--config', default=DEFAULT_CONFIG, help='experiment, relative to the repo')
  parser.add_argument('--root', default=str(REPO / 'runs/quality'), help='workdirs go here')
  parser.add_argument('--results', default=str(REPO / 'runs/quality/results.jsonl'),
                      help='JSON lines, one per run (appended)')
  parser.add_argument('--num_images', type=int, default=NUM_IMAGES, help='generated = real count')
  parser.add_argument('--batch_size', type=int, default=64, help='Inception / generator batch')
  parser.add_argument('--cache_dir', default=None, help='real statistics cache '
                      '(default ~/.cache/gan_jax/stats)')
  parser.add_argument('--inception_weights', default=None, help='default: the cached fetch')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override, also passed to gan_jax.main (repeatable)')
  parser.add_argument('--no_noise', action='store_true',
                      help='ablation: score G_ema with every noise_strength set to 0')
  parser.add_argument('--summary', action='store_true', help='only print the summary')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, extractor=None) -> dict:
  """Runs the seeds (unless --summary); prints and returns the summary. `extractor` replaces the
  Inception network (tests pass a cheap one)."""
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)
  results, commit = Path(args.results), git_commit()
  if not args.summary:
    extractor = extractor or make_extractor(args.batch_size, args.inception_weights)
    for seed in (int(s) for s in args.seeds.split(',') if s.strip()):
      row = run_seed(args, seed, extractor, commit)
      print(json.dumps(row), flush=True)
      results.parent.mkdir(parents=True, exist_ok=True)
      with open(results, 'a') as f:
        f.write(json.dumps(row) + '\n')
  rows = [r for r in read_results(results)
          if r['kimg'] == args.kimg and r['config'] == args.config
          and r.get('overrides', []) == list(args.set)
          and r.get('noise', 'on') == ('off' if args.no_noise else 'on')
          and (args.summary or r['commit'] == commit)]
  summary = summarize(rows, metric_name(args.num_images))
  summary.update(kimg=args.kimg, commits=sorted({r['commit'] for r in rows}))
  print(json.dumps(summary), flush=True)
  return summary


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
