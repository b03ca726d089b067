"""Datasets and the input pipeline.

Modules (import them by name: `from gan_jax.data import pipeline`):
  pipeline       registry of datasets, `load_builder`, `dataset_info`,
                 `InputPipeline` (deterministic, resumable, per process).
  sampler        the pure (seed, step) -> example indices / flips schedule.
  fashion_mnist  `FashionMnistLocal`, a TFDS builder over Debian's idx files.
  lfw            `LfwFaces`: scikit-image's 100 LFW faces at 32x32, offline.
  ffhq           `Ffhq`, FFHQ from the local images1024x1024 PNGs.
  celeb_a_hq     CelebA-HQ through TFDS's own builder (manual download).
  prepare        any folder or zip of images -> 'prepared/NAME' (a CLI).
  image_files    the image conversion both ffhq and prepare use.
  errors         `DatasetError`.
"""
