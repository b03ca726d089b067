"""Metrics: the FID Inception feature network and the statistics on its features.

  inception_features(images, weights=None) -> float32 (N, 2048)   gan_jax.metrics.inception
  python -m gan_jax.metrics.fetch                                  caches the network's weights
  FeatureStats, frechet_distance, kernel_inception_distance       gan_jax.metrics.frechet
  registry.parse('fid50k_full'), NVIDIA's metric names              gan_jax.metrics.registry
  Evaluator(config.data, mesh).evaluate(G, variables, names[, stage=, alpha=])  .evaluator
  sharded extraction, the real-statistics cache                   gan_jax.metrics.features
  precision/recall, perceptual path length                        precision_recall, ppl
  StyleGAN3 equivariance (eqt50k_int, eqt50k_frac, eqr50k)         equivariance
  config.evals during training                                    gan_jax.metrics.periodic
  python -m gan_jax.evaluate --workdir RUN --metrics fid50k_full   the command line
"""

from gan_jax.metrics.frechet import FeatureStats
from gan_jax.metrics.frechet import frechet_distance
from gan_jax.metrics.frechet import kernel_inception_distance
from gan_jax.metrics.inception import inception_features
from gan_jax.metrics.inception import load_params

__all__ = ['FeatureStats', 'frechet_distance', 'kernel_inception_distance', 'inception_features',
           'load_params']
