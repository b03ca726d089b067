"""Improved precision and recall (Kynkäänniemi et al. 2019), as NVIDIA's `pr50k3_full` computes
them.

Each set of features is a manifold estimate: the union of balls around its points whose radius is
the distance to the point's k-th nearest neighbour in the set (the point itself excluded).
Precision = the fraction of generated features that lie in some ball of the real manifold;
recall = the fraction of real features that lie in some ball of the generated manifold.

Distances are Euclidean on the feature vectors, computed in blocks of rows and columns (as
NVIDIA's `row_batch_size` / `col_batch_size`), in float32 on the default device. NVIDIA uses
VGG16 fc2 features for this metric; VGG16 weights are not available offline, so gan_jax uses the
FID Inception pool3 features: the numbers are not comparable with NVIDIA's published ones.
NVIDIA also rounds the radii to float16; here they stay float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _sq_distances(rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Squared Euclidean distances (len(rows), len(cols)), clipped at 0."""
  d = (jnp.sum(rows * rows, 1)[:, None] + jnp.sum(cols * cols, 1)[None, :]
       - 2 * jnp.matmul(rows, cols.T, precision=jax.lax.Precision.HIGHEST))
  return jnp.maximum(d, 0)


def _smallest(d: jax.Array, count: int) -> jax.Array:
  """The `count` smallest values of each row, ascending."""
  return -jax.lax.top_k(-d, count)[0]


@functools.partial(jax.jit, static_argnames=('k', 'block'))
def _kth_neighbour(rows: jax.Array, row_start: jax.Array, manifold: jax.Array, k: int,
                   block: int) -> jax.Array:
  """Squared distance of each of `rows` (manifold[row_start:]) to its k-th nearest neighbour in
  `manifold`, itself excluded; columns are taken `block` at a time."""
  n = manifold.shape[0]
  best = None
  for c0 in range(0, n, block):
    cols = manifold[c0:c0 + block]
    d = _sq_distances(rows, cols)
    is_self = (row_start + jnp.arange(rows.shape[0]))[:, None] == c0 + jnp.arange(len(cols))
    d = jnp.where(is_self, 0.0, d)  # an exact zero for the point itself
    part = _smallest(d, min(k + 1, len(cols)))
    best = part if best is None else _smallest(jnp.concatenate([best, part], 1),
                                               min(k + 1, best.shape[1] + part.shape[1]))
  return best[:, k]  # index 0 is the point itself


@functools.partial(jax.jit, static_argnames='block')
def _covered(probes: jax.Array, manifold: jax.Array, radii: jax.Array, block: int) -> jax.Array:
  """Whether each probe lies within radius of some manifold point (squared distances)."""
  hit = jnp.zeros((probes.shape[0],), bool)
  for c0 in range(0, manifold.shape[0], block):
    d = _sq_distances(probes, manifold[c0:c0 + block])
    hit = hit | jnp.any(d <= radii[c0:c0 + block][None, :], axis=1)
  return hit


def _row_blocks(x: np.ndarray, block: int):
  """(start, rows padded to `block`, valid count): one compiled shape for every block."""
  for start in range(0, x.shape[0], block):
    rows = x[start:start + block]
    valid = rows.shape[0]
    if valid < block:
      rows = np.concatenate([rows, np.zeros((block - valid, x.shape[1]), x.dtype)])
    yield start, rows, valid


def manifold_radii(features, k: int, block: int = 10000) -> np.ndarray:
  """Squared distance of every feature to its k-th nearest neighbour in the same set."""
  x = np.asarray(features, np.float32)
  n = x.shape[0]
  if not 1 <= k < n:
    raise ValueError(f'k={k} neighbours need more than k features, got {n}')
  block = min(max(block, k + 1), n)
  manifold = jnp.asarray(x)
  return np.concatenate([
      np.asarray(_kth_neighbour(rows, jnp.int32(start), manifold, k, block))[:valid]
      for start, rows, valid in _row_blocks(x, block)])


def coverage(manifold, radii: np.ndarray, probes, block: int = 10000) -> float:
  """Fraction of `probes` within the radius of at least one manifold point (d <= radius)."""
  probes = np.asarray(probes, np.float32)
  m, r = jnp.asarray(manifold, jnp.float32), jnp.asarray(radii, jnp.float32)
  block = min(block, max(probes.shape[0], 1))
  inside = [np.asarray(_covered(rows, m, r, block))[:valid]
            for _, rows, valid in _row_blocks(probes, block)]
  return float(np.concatenate(inside).mean())


def precision_recall(real_features, fake_features, k: int = 3,
                     block: int = 10000) -> tuple[float, float]:
  """(precision, recall) of fake against real features with k-NN manifolds."""
  real = np.asarray(real_features, np.float32)
  fake = np.asarray(fake_features, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f'features must be (n, d) with the same d, got {real.shape}, {fake.shape}')
  precision = coverage(real, manifold_radii(real, k, block), fake, block)
  recall = coverage(fake, manifold_radii(fake, k, block), real, block)
  return precision, recall
