"""Editing directions in W: unsupervised (GANSpace) and supervised (InterFaceGAN), saved by name.

  python -m gan_jax.tools.directions pca --workdir runs/fmnist --out dirs.npz --components 10
  python -m gan_jax.tools.directions class --workdir runs/fmnist_cond --out dirs.npz --pair 1,3
  python -m gan_jax.tools.directions class --workdir runs/fmnist_cond --out dirs.npz   # k vs rest
  python -m gan_jax.tools.directions classifier --workdir runs/faces --out dirs.npz \
      --classifier my_module:smiling --name smile [--fraction 0.2]
  python -m gan_jax.tools.directions labels --workdir runs/fmnist --out dirs.npz \
      --encoder runs/enc --pair 7,9              # the dataset's labels, through an encoder
  python -m gan_jax.tools.directions orthogonalise --out dirs.npz --direction smile --against age
  python -m gan_jax.tools.directions show --out dirs.npz

Each command adds its directions to --out (created if missing; a name already there is replaced);
`gan_jax.tools.edit` applies them. The ws are sampled as NVIDIA samples a seed:
z = RandomState(--seed).randn(--samples, z_dim), mapped with --trunc; a conditional generator
gets uniformly random classes (or --class) for pca and classifier.

  pca (GANSpace, Harkonen et al. 2020): the top --components principal axes of the sampled ws
    (centred at their mean), named pc0, pc1, ... in order of variance; the sign of each is fixed
    so that its largest-magnitude coordinate is positive.
  class (InterFaceGAN, Shen et al. 2020, labelled by the class condition): the ws of the same zs
    mapped with each class are the two sides; a logistic regression (L2-regularised, fitted by
    Newton's method on 80% of the ws, its accuracy measured on the other 20%) separates them and
    its unit normal, pointing from the negative to the positive side, is the direction. --pair
    A,B gives one direction A->B (from class A to class B); without it, one per class k, named
    'not-k->k', k against all the others.
  classifier (InterFaceGAN with a user's attribute model): --classifier module:function (or
    path/file.py:function) is called on batches of generated images, float (N, H, W, C) in the
    generator's range (about [-1, 1]), and returns (N,) scores (higher: more of the attribute) or
    0/1 labels. With scores, the top and bottom --fraction of the samples are the positive and
    negative sides (InterFaceGAN keeps the most confident ones); with 0/1 labels, all of them.
  orthogonalise (InterFaceGAN's conditional manipulation): a' = a - (a.b) b, normalised: editing
    along a' changes b's attribute's linear score not at all (on the sampled ws), so e.g. age can
    move with the smile held.

  labels (InterFaceGAN labelled by the dataset's own labels, through an encoder run): the real
    images of two labels inverted by the encoder, a logistic regression between their ws
    (gan_jax/tools/directions_labels.py).

W and W+. Every direction is a vector in W (w_dim); an edit adds it to the ws of a chosen layer
range (GANSpace's layer-wise edits; `--layers` here stores a default range, `edit --layers`
overrides it), which is an edit in W+. A W+ latent (a projection with --w_plus) is edited the
same way, each of its selected ws moved along the direction.

The file (.npz, read with `load`):
  names (K,) str; directions (K, w_dim) float32 unit vectors; method (K,) str: 'pca', 'class',
  'classifier', 'labels', 'orthogonalised'; layers (K,) str: the default ws range ('all' or
  e.g. '0-3');
  sigma (K,): the standard deviation of the sampled ws along the direction, the unit of an
  edit's strength (from the file's statistics: one unit for all its directions); offset (K,):
  the mean of (w - w_avg) along it; span (K,): for the supervised
  ones, the distance between the two sides' mean ws along it in sigmas (the strength that moves
  an average negative w to an average positive one; NaN for pca); accuracy (K,): held-out
  accuracy of the classifier (NaN for pca); explained_variance (K,): the share of the ws'
  variance along it (pca's; NaN otherwise); info (K,) str: how each was made (samples, seed,
  psi, classes, fraction). The sampled ws' statistics, from the file's first command, centred
  at the generator's w_avg: w_avg (w_dim,), w_mean (w_dim,) = mean(w) - w_avg, w_cov (w_dim,
  w_dim) = their covariance (sigma and offset of any new direction, e.g. an orthogonalised one,
  come from them). source: the generator's source; w_dim, num_ws.
"""

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax.tools import cli
from gan_jax.tools import directions_labels
from gan_jax.tools import loading

METHODS = ('pca', 'class', 'classifier', 'labels', 'orthogonalised')
_PER_DIRECTION = ('names', 'directions', 'method', 'layers', 'sigma', 'offset', 'span',
                  'accuracy', 'explained_variance', 'info')


# --------------------------------------------------------------------------------------------
# The maths, on plain arrays (the tests plant directions in synthetic ws).


def pca_directions(ws: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(k, D) unit principal axes of ws (N, D) by decreasing variance, and their variance shares."""
  ws = np.asarray(ws, np.float64)
  if not 1 <= k <= min(ws.shape):
    raise cli_errors.UserError(f'--components must lie in [1, {min(ws.shape)}], got {k}')
  _, s, vt = np.linalg.svd(ws - ws.mean(axis=0), full_matrices=False)
  axes = vt[:k]
  signs = np.sign(axes[np.arange(k), np.argmax(np.abs(axes), axis=1)])
  return axes * signs[:, None], (s[:k] ** 2) / np.sum(s ** 2)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-5,
                 iterations: int = 100) -> tuple[np.ndarray, float]:
  """(weights (D,), bias) minimising mean logistic loss + l2 / 2 |weights|^2 (Newton's method
  with step halving).

  The L2 term keeps the weights finite on separable data (class-conditional ws usually are),
  where the unregularised optimum is at infinity; it is small because it also pulls the normal
  toward the high-variance axes of x (ridge shrinkage): on 6000 correlated 16-d points labelled
  by a planted normal d (x scaled to unit std), l2 1e-1 found cos 0.86 to d, 1e-3 0.93, 1e-5
  0.97."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  n, d = x.shape
  xb = np.concatenate([x, np.ones((n, 1))], axis=1)
  reg = np.full(d + 1, l2)
  reg[-1] = 0.0  # the bias is not penalised

  def objective(theta):
    m = xb @ theta
    return np.mean(np.logaddexp(0.0, m) - y * m) + 0.5 * np.sum(reg * theta ** 2)

  theta = np.zeros(d + 1)
  value = objective(theta)
  for _ in range(iterations):
    p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -60, 60)))
    grad = xb.T @ (p - y) / n + reg * theta
    hess = (xb.T * (p * (1 - p))) @ xb / n + np.diag(reg) + 1e-12 * np.eye(d + 1)
    step = np.linalg.solve(hess, grad)
    t = 1.0
    while t > 1e-6 and objective(theta - t * step) > value:
      t *= 0.5
    theta = theta - t * step
    new_value = objective(theta)
    if value - new_value < 1e-12 * max(1.0, abs(value)):
      break
    value = new_value
  return theta[:-1], float(theta[-1])


def linear_direction(x: np.ndarray, y: np.ndarray, seed: int = 0,
                     holdout: float = 0.2) -> tuple[np.ndarray, float]:
  """InterFaceGAN's boundary normal for points x (N, D) labelled y in {0, 1}: the unit weights of
  a logistic regression fitted on a random (1 - holdout) of them, pointing to y = 1, and its
  accuracy on the rest."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y).astype(np.int64)
  if set(np.unique(y)) != {0, 1}:
    raise cli_errors.UserError('a supervised direction needs samples on both sides (labels 0 '
                               f'and 1), got labels {sorted(set(np.unique(y)))}')
  order = np.random.RandomState(seed).permutation(len(x))
  n_test = int(round(holdout * len(x)))
  test, train = order[:n_test], order[n_test:]
  mean, scale = x[train].mean(axis=0), x[train].std() + 1e-12
  weights, bias = fit_logistic((x[train] - mean) / scale, y[train])
  norm = np.linalg.norm(weights)
  if norm == 0:
    raise cli_errors.UserError('the classifier found no direction (the two sides are alike)')
  accuracy = (float(np.mean((((x[test] - mean) / scale) @ weights + bias > 0) == y[test]))
              if n_test else float('nan'))
  return weights / norm, accuracy


def orthogonalise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a with its component along b removed, unit length (InterFaceGAN's conditional edit)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  b = b / np.linalg.norm(b)
  out = a - np.dot(a, b) * b
  norm = np.linalg.norm(out)
  if norm < 1e-6 * np.linalg.norm(a):
    raise cli_errors.UserError('the two directions are parallel: nothing is left of the first '
                               'once the second is removed')
  return out / norm


def span(x: np.ndarray, y: np.ndarray, direction: np.ndarray, sigma: float) -> float:
  """Distance between the positive and negative sides' means along direction, in sigmas."""
  x, y = np.asarray(x, np.float64), np.asarray(y)
  return float((x[y == 1].mean(axis=0) - x[y == 0].mean(axis=0)) @ direction / sigma)


# --------------------------------------------------------------------------------------------
# Sampling ws and images from a generator.


def sample_ws(g: loading.LoadedGenerator, n: int, seed: int, psi: float = 1.0,
              classes: Optional[np.ndarray] = None, batch: int = 500) -> np.ndarray:
  """(n, w_dim) float64: w of z = RandomState(seed).randn(n, z_dim) (one w per z: ws[:, 0]);
  classes (n,) int for a conditional generator. Batches of a fixed size (one compile)."""
  z = np.random.RandomState(seed).randn(n, g.z_dim).astype(np.float32)
  out = []
  for i in range(0, n, batch):
    zb = z[i:i + batch]
    pad = batch - len(zb)
    zb = np.concatenate([zb, np.zeros((pad, g.z_dim), np.float32)])
    cb = None
    if g.c_dim:
      cb = np.concatenate([classes[i:i + batch], np.zeros(pad, np.int64)])
    out.append(g.mapping(zb, cb, psi=psi)[:batch - pad, 0])
  return np.concatenate(out).astype(np.float64)


def images_of(g: loading.LoadedGenerator, ws: np.ndarray, batch: int = 64):
  """Yields float image batches (<= batch, H, W, C) of w (N, w_dim) (broadcast to every ws)."""
  for i in range(0, len(ws), batch):
    wb = ws[i:i + batch].astype(np.float32)
    pad = batch - len(wb)
    wb = np.concatenate([wb, np.zeros((pad, wb.shape[1]), np.float32)])
    yield g.synthesis(np.repeat(wb[:, None], g.num_ws, axis=1))[:batch - pad]


def load_classifier(spec: str) -> Callable[[np.ndarray], np.ndarray]:
  """'module:function' or 'path/to/file.py:function' -> the function."""
  target, sep, name = spec.rpartition(':')
  if not sep or not target or not name:
    raise cli_errors.UserError(f'--classifier {spec!r}: use module:function or file.py:function')
  if target.endswith('.py'):
    if not os.path.exists(target):
      raise FileNotFoundError(f'--classifier: {target} does not exist')
    module_spec = importlib.util.spec_from_file_location('_user_classifier', target)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else:
    if os.getcwd() not in sys.path:
      sys.path.insert(0, os.getcwd())
    module = importlib.import_module(target)
  fn = getattr(module, name, None)
  if not callable(fn):
    raise cli_errors.UserError(f'--classifier {spec!r}: {target} has no function {name!r}')
  return fn


def classify(g: loading.LoadedGenerator, fn: Callable, ws: np.ndarray,
             fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """(ws kept, labels 0/1) from fn's scores on the images of ws."""
  scores = np.concatenate([np.asarray(fn(images), np.float64).reshape(-1)
                           for images in images_of(g, ws)])
  if scores.shape != (len(ws),):
    raise cli_errors.UserError(f'the classifier must return one score per image ({len(ws)}), '
                               f'got {scores.shape}')
  if set(np.unique(scores)) <= {0.0, 1.0}:
    return ws, scores.astype(np.int64)
  if not 0 < fraction <= 0.5:
    raise cli_errors.UserError(f'--fraction must lie in (0, 0.5], got {fraction}')
  k = max(1, int(fraction * len(ws)))
  order = np.argsort(scores, kind='stable')
  keep = np.concatenate([order[:k], order[-k:]])
  return ws[keep], np.concatenate([np.zeros(k, np.int64), np.ones(k, np.int64)])


# --------------------------------------------------------------------------------------------
# The file.


def load(path: str) -> dict:
  """The directions file as a dict of numpy arrays (see the module docstring)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no directions file (make one with '
                            'python -m gan_jax.tools.directions)')
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def save(path: str, table: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:  # np.savez would append .npz to another suffix
    np.savez(f, **table)


def lookup(table: dict, name: str) -> int:
  """Index of the direction called name."""
  names = [str(n) for n in table['names']]
  if name not in names:
    raise cli_errors.UserError(f'no direction {name!r}; the file has {", ".join(names)}')
  return names.index(name)


def add(table: Optional[dict], g: Optional[loading.LoadedGenerator], stats: Optional[dict],
        entries: list[dict]) -> dict:
  """table with entries (dicts of the per-direction fields) added, replacing equal names."""
  if table is None:
    table = {'w_avg': stats['w_avg'], 'w_mean': stats['w_mean'], 'w_cov': stats['w_cov'],
             'source': np.array(g.source), 'w_dim': np.array(g.w_dim),
             'num_ws': np.array(g.num_ws), **{k: None for k in _PER_DIRECTION}}
    rows = []
  else:
    if g is not None and (int(table['w_dim']), int(table['num_ws'])) != (g.w_dim, g.num_ws):
      raise cli_errors.UserError(
          f'the file holds directions of a generator with w_dim {int(table["w_dim"])} and '
          f'{int(table["num_ws"])} ws; this one has {g.w_dim} and {g.num_ws}: use another --out')
    rows = [{k: table[k][i] for k in _PER_DIRECTION} for i in range(len(table['names']))]
  new = {e['names'] for e in entries}
  rows = [r for r in rows if str(r['names']) not in new] + entries
  for k in _PER_DIRECTION:
    values = [r[k] for r in rows]
    table[k] = (np.array([str(v) for v in values]) if k in ('names', 'method', 'layers', 'info')
                else np.array(values, np.float32))
  return table


def entry(table_or_stats: dict, name: str, direction: np.ndarray, method: str, layers: str,
          info: str, span_value: float = float('nan'), accuracy: float = float('nan'),
          explained: float = float('nan')) -> dict:
  """One row, its sigma and offset from the w_avg-centred statistics."""
  d = np.asarray(direction, np.float64)
  sigma = float(np.sqrt(max(d @ table_or_stats['w_cov'] @ d, 1e-20)))
  return {'names': name, 'directions': d, 'method': method, 'layers': layers,
          'sigma': sigma, 'offset': float(d @ table_or_stats['w_mean']),
          'span': span_value, 'accuracy': accuracy, 'explained_variance': explained,
          'info': info}


def restat(e: dict, stats: dict) -> dict:
  """e with sigma and offset from other statistics (its span rescaled to the new sigma)."""
  new = entry(stats, e['names'], e['directions'], e['method'], e['layers'], e['info'],
              accuracy=e['accuracy'], explained=e['explained_variance'])
  new['span'] = e['span'] * e['sigma'] / new['sigma']
  return new


def statistics(g: loading.LoadedGenerator, ws: np.ndarray) -> dict:
  w_avg = g.w_avg.astype(np.float64)
  return {'w_avg': w_avg.astype(np.float32), 'w_mean': ws.mean(axis=0) - w_avg,
          'w_cov': np.cov(ws, rowvar=False)}


def describe(table: dict) -> str:
  lines = [f'{len(table["names"])} directions of {table["source"]} (w_dim {int(table["w_dim"])},'
           f' {int(table["num_ws"])} ws):']
  for i, name in enumerate(table['names']):
    extra = []
    for key, label in (('span', 'span'), ('accuracy', 'held-out acc'),
                       ('explained_variance', 'var share')):
      if np.isfinite(table[key][i]):
        extra.append(f'{label} {table[key][i]:.3f}')
    lines.append(f'  {name}: {table["method"][i]}, layers {table["layers"][i]}, sigma '
                 f'{table["sigma"][i]:.3f}' + ''.join(f', {e}' for e in extra) +
                 f' ({table["info"][i]})')
  return '\n'.join(lines)


# --------------------------------------------------------------------------------------------
# The command line.


def layers_of(spec: Optional[str], g: loading.LoadedGenerator) -> str:
  if spec is None or spec == 'all':
    return 'all'
  from gan_jax.tools import style_mixing  # pylint: disable=g-import-not-at-top
  style_mixing.style_indices(spec, g.num_ws)  # checks it
  return spec


def _run_pca(g, args) -> tuple[dict, list[dict]]:
  classes = classes_of(g, args)
  ws = sample_ws(g, args.samples, args.seed, args.trunc, classes)
  stats = statistics(g, ws)
  axes, shares = pca_directions(ws, args.components)
  info = f'{args.samples} samples, seed {args.seed}, psi {args.trunc}'
  return stats, [entry(stats, f'{args.prefix}{i}', axes[i], 'pca', layers_of(args.layers, g),
                       info, explained=float(shares[i])) for i in range(len(axes))]


def classes_of(g, args) -> Optional[np.ndarray]:
  if not g.c_dim:
    cli.class_label(g, args.class_idx)  # warns about an ignored --class
    return None
  if args.class_idx is not None:
    cli.class_label(g, args.class_idx)
    return np.full(args.samples, args.class_idx)
  return np.random.RandomState(args.seed + 1).randint(0, g.c_dim, args.samples)


def _run_class(g, args) -> tuple[dict, list[dict]]:
  if not g.c_dim:
    raise cli_errors.UserError('class directions need a conditional generator; this one is '
                               'unconditional (use pca or classifier)')
  n = args.samples
  if args.pair:
    pair = [int(p) for p in args.pair.split(',')]
    if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= p < g.c_dim for p in pair):
      raise cli_errors.UserError(f'--pair must be two different classes in [0, {g.c_dim}), got '
                                 f'{args.pair}')
    tasks = [(pair[0], pair[1], args.name or f'{pair[0]}->{pair[1]}')]
  else:
    tasks = [(None, k, f'not-{k}->{k}') for k in range(g.c_dim)]
  # The same zs under every class: the sides differ by the class alone.
  per_class = np.stack([sample_ws(g, n, args.seed, args.trunc, np.full(n, k))
                        for k in range(g.c_dim)])
  stats = statistics(g, per_class.reshape(-1, g.w_dim))
  entries = []
  for neg, pos, name in tasks:
    if neg is None:  # k against the rest: every other class's ws, as many as class k's
      others = np.delete(per_class, pos, axis=0)
      pick = np.random.RandomState(args.seed + pos).randint(0, len(others), n)
      x = np.concatenate([others[pick, np.arange(n)], per_class[pos]])
    else:
      x = np.concatenate([per_class[neg], per_class[pos]])
    y = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    direction, accuracy = linear_direction(x, y, args.seed)
    e = entry(stats, name, direction, 'class', layers_of(args.layers, g),
              f'{n} zs per class, seed {args.seed}, psi {args.trunc}, classes '
              f'{"rest" if neg is None else neg}->{pos}', accuracy=accuracy)
    e['span'] = span(x, y, direction, e['sigma'])
    entries.append(e)
  return stats, entries


def _run_classifier(g, args) -> tuple[dict, list[dict]]:
  if not args.classifier or not args.name:
    raise cli_errors.UserError('classifier needs --classifier module:function and --name')
  fn = load_classifier(args.classifier)
  ws = sample_ws(g, args.samples, args.seed, args.trunc, classes_of(g, args))
  stats = statistics(g, ws)
  x, y = classify(g, fn, ws, args.fraction)
  direction, accuracy = linear_direction(x, y, args.seed)
  e = entry(stats, args.name, direction, 'classifier', layers_of(args.layers, g),
            f'{args.classifier} on {args.samples} samples (fraction {args.fraction}), seed '
            f'{args.seed}, psi {args.trunc}', accuracy=accuracy)
  e['span'] = span(x, y, direction, e['sigma'])
  return stats, [e]


def _run_labels(g, args) -> tuple[dict, list[dict]]:
  pair = tuple(int(p) for p in args.pair.split(','))
  if len(pair) != 2 or pair[0] == pair[1] or min(pair) < 0 or args.per_class < 2:
    raise cli_errors.UserError(f'--pair must be two different labels A,B (got {args.pair}) and '
                               f'--per_class >= 2 (got {args.per_class})')
  e = directions_labels.inversion_encoder(args.encoder, g)
  stats = statistics(g, sample_ws(g, args.samples, args.seed, args.trunc, classes_of(g, args)))
  x, y = directions_labels.encoded_sides(e, pair, args.per_class, args.split)
  direction, accuracy = linear_direction(x, y, args.seed)
  row = entry(stats, args.name or f'{pair[0]}->{pair[1]}', direction, 'labels',
              layers_of(args.layers, g), f'{int((y == 0).sum())} + {int((y == 1).sum())} '
              f'{args.split} images of labels {pair[0]}->{pair[1]} encoded by {args.encoder}',
              accuracy=accuracy)
  row['span'] = span(x, y, direction, row['sigma'])
  return stats, [row]


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the command line; returns the directions table written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.directions',
                                   description='Find editing directions in W and save them.')
  sub = parser.add_subparsers(dest='command', required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('--out', required=True, help='directions file (.npz), created or extended')
  sampled = argparse.ArgumentParser(add_help=False)
  cli.add_generator_args(sampled)
  sampled.add_argument('--samples', type=int, default=10000, help='sampled ws (per class)')
  sampled.add_argument('--seed', type=int, default=0)
  sampled.add_argument('--trunc', type=float, default=1.0, help='truncation psi of the samples')
  sampled.add_argument('--layers', default=None,
                       help='default ws range of edits: all, coarse, middle, fine or e.g. 0-3')
  p = sub.add_parser('pca', parents=[common, sampled], help='GANSpace: principal axes')
  p.add_argument('--components', type=int, default=10)
  p.add_argument('--prefix', default='pc', help='names: <prefix>0, <prefix>1, ...')
  p = sub.add_parser('class', parents=[common, sampled],
                     help='InterFaceGAN labelled by the class condition')
  p.add_argument('--pair', default=None, help='A,B: one direction from class A to class B')
  p.add_argument('--name', default=None, help='with --pair: its name (default A->B)')
  p = sub.add_parser('classifier', parents=[common, sampled],
                     help='InterFaceGAN labelled by a user classifier')
  p.add_argument('--classifier', required=True, help='module:function or file.py:function')
  p.add_argument('--name', required=True)
  p.add_argument('--fraction', type=float, default=0.2,
                 help='with scores: the top and bottom fraction are the two sides')
  p = sub.add_parser('orthogonalise', parents=[common],
                     help='remove from one direction its component along another')
  p.add_argument('--direction', required=True)
  p.add_argument('--against', required=True, help='comma list: removed one after the other')
  p.add_argument('--name', default=None, help='default: <direction>|<against>')
  sub.add_parser('show', parents=[common], help='list the file\'s directions')
  p = sub.add_parser('labels', parents=[common, sampled],
                     help="InterFaceGAN labelled by the dataset's labels, through an encoder")
  p.add_argument('--encoder', required=True, help="an inversion encoder run's workdir")
  p.add_argument('--pair', required=True, help='A,B: the dataset labels of the two sides')
  p.add_argument('--per_class', type=int, default=500, help='real images of each class')
  p.add_argument('--split', default='train', help="the encoder run's dataset split to read")
  p.add_argument('--name', default=None, help='default A->B')
  args = parser.parse_args(argv)

  if args.command in ('orthogonalise', 'show'):
    table = load(args.out)
    if args.command == 'orthogonalise':
      i = lookup(table, args.direction)
      d = table['directions'][i].astype(np.float64)
      against = [s for s in args.against.split(',') if s]
      basis = []  # Gram-Schmidt, so removing several directions removes their whole span
      for name in against:
        b = table['directions'][lookup(table, name)].astype(np.float64)
        for q in basis:
          b = b - (b @ q) * q
        basis.append(b / np.linalg.norm(b))
      for q in basis:
        d = orthogonalise(d, q)
      name = args.name or f'{args.direction}|{",".join(against)}'
      table = add(table, None, None, [entry(
          table, name, d, 'orthogonalised', str(table['layers'][i]),
          f'{args.direction} orthogonal to {", ".join(against)}')])
      save(args.out, table)
  else:
    if args.samples < 2:
      parser.error('--samples must be >= 2')
    g = cli.load_generator(parser, args)
    if not g.family.w_space:
      raise cli_errors.UserError(f'a {g.family.title} generator has no W space to edit in')
    stats, entries = {'pca': _run_pca, 'class': _run_class, 'classifier': _run_classifier,
                      'labels': _run_labels}[args.command](g, args)
    table = load(args.out) if os.path.exists(args.out) else None
    if table is not None:  # one unit per file: sigma from the file's statistics
      entries = [restat(e, table) for e in entries]
    table = add(table, g, stats, entries)
    save(args.out, table)
  print(describe(table))
  return table


if __name__ == '__main__':
  cli_errors.run(main)
