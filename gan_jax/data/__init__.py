"""Datasets and the input pipeline.

Modules (import them by name: `from gan_jax.data import pipeline`):
  pipeline       registry of datasets, `load_builder`, `dataset_info`,
                 `InputPipeline` (deterministic, resumable, per process).
  sampler        the pure (seed, step) -> example indices / flips schedule.
  fashion_mnist  `FashionMnistLocal`, a TFDS builder over Debian's idx files.
  errors         `DatasetError`.
"""
