"""CelebA-HQ (Karras et al. 2018) through TFDS's own `celeb_a_hq` builder.

TFDS cannot download CelebA-HQ: its builder reads `data{R}x{R}.tar` (the
R x R PNGs that ProGAN's dataset_tool makes from CelebA and the CelebA-HQ
deltas, 30,000 images) from the manual_dir. Its features are 'image'
(R, R, 3) PNG and 'image/filename'; configs '1024', '512', ..., '1' (powers of
two). Build it once, in ArrayRecord so the input pipeline can read records by
index:

  tfds build celeb_a_hq/256 --manual_dir DIR_WITH_TARS --data_dir DATA_DIR \
      --file_format array_record

or run with `--config.data.source_dir=DIR_WITH_TARS` to build on first use.
`config.data.name` 'celeb_a_hq/1024' ... 'celeb_a_hq/128' reads it.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow_datasets as tfds

from gan_jax.data.errors import DatasetError

TFDS_NAME = 'celeb_a_hq'
RESOLUTIONS = (1024, 512, 256, 128)  # registered in pipeline.DATASETS
HOMEPAGE = ('https://github.com/tkarras/progressive_growing_of_gans'
            '#preparing-datasets-for-training')


def builder_cls() -> type[tfds.core.DatasetBuilder]:
  return tfds.builder_cls(TFDS_NAME)


def tar_name(resolution: int) -> str:
  return f'data{resolution}x{resolution}.tar'


def recipe(resolution: int, data_dir, manual_dir) -> str:
  """How to prepare celeb_a_hq/`resolution`: the missing-data error's text."""
  return (
      f'CelebA-HQ ({TFDS_NAME}/{resolution}) is not prepared in {data_dir}, '
      f'and TFDS cannot download it. Make {tar_name(resolution)} (the '
      f'{resolution}x{resolution} PNGs of ProGAN\'s dataset_tool, '
      f'{HOMEPAGE}), put it in {manual_dir}, then build once:\n'
      f'  tfds build {TFDS_NAME}/{resolution} --manual_dir {manual_dir} '
      f'--data_dir {data_dir} --file_format array_record\n'
      f'or run with --config.data.source_dir=DIR_WITH_THE_TAR to build on '
      f'first use.')


def builder_kwargs(resolution: int, data_config) -> dict[str, Any]:
  del data_config
  return {'config': str(resolution), 'file_format': 'array_record'}


def manual_dir(builder: tfds.core.DatasetBuilder, data_config) -> str:
  """source_dir when given, else TFDS's default manual_dir,
  <data_dir>/downloads/manual."""
  source_dir = data_config.get('source_dir')
  if source_dir:
    return os.fspath(source_dir)
  return os.path.join(os.fspath(builder.data_dir_root), 'downloads', 'manual')


def prepare(builder: tfds.core.DatasetBuilder, data_config) -> None:
  """Builds the dataset from the manual tar; DatasetError with the recipe if
  the tar is missing (TFDS's own builder would raise an AssertionError)."""
  resolution = builder.builder_config.resolution
  manual = manual_dir(builder, data_config)
  if not os.path.isfile(os.path.join(manual, tar_name(resolution))):
    raise DatasetError(recipe(resolution, builder.data_dir_root, manual))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
