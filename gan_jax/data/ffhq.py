"""FFHQ (Karras et al. 2019) as a local TFDS builder over the public PNGs.

  python -m gan_jax.data.ffhq --source /data/ffhq/images1024x1024 --resolution 256

builds `ffhq/256` once into the TFDS data_dir (`--data_dir`, default
~/tensorflow_datasets), where runs with `config.data.name='ffhq/256'` read it.
Nothing is downloaded. The source is NVIDIA's `images1024x1024` folder (70,000
PNGs in subfolders 00000/ ... 69000/, github.com/NVlabs/ffhq-dataset), given as
`source_dir` or as TFDS's manual_dir (default <data_dir>/downloads/manual).

Every *.png under the source, searched recursively, is read in sorted order of
file name, so record i is always the same face ('filename' keeps its relative
path). Images are converted to RGB (grayscale and palette expanded, alpha
dropped) and resized to the config's resolution with PIL's Lanczos filter, as
StyleGAN2-ADA's dataset_tool does, or a box filter (`resize_filter='box'`, the
2x2 averaging of TF StyleGAN2's multi-resolution TFRecords); an 8-bit RGB PNG
already at the resolution is stored byte for byte. FID depends on the
filter: it, the resolution and the channels are in `builder.info.metadata`.

A file PIL cannot read is skipped, logged, counted and listed in
metadata['skipped_files'] and in skipped_files.txt in the dataset's folder. A
non-square image, or one smaller than the resolution, stops the build with a
`DatasetError` naming the file. There is no 'label' feature: FFHQ is unlabeled,
`pipeline.dataset_info` reports num_classes=0 and batches carry label 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os

from absl import logging
import tensorflow_datasets as tfds

from gan_jax import cli_errors
from gan_jax.data import image_files
from gan_jax.data.errors import DatasetError

HOMEPAGE = 'https://github.com/NVlabs/ffhq-dataset'
RESOLUTIONS = (1024, 512, 256, 128)  # predefined builder configs
CHANNELS = 3
RESIZE_FILTERS = image_files.RESIZE_FILTERS
DEFAULT_RESIZE_FILTER = 'lanczos'
SKIPPED_REPORT = 'skipped_files.txt'
_LOG_EVERY = 1000  # images between progress lines

_CITATION = """\
@inproceedings{karras2019style, booktitle = {CVPR}, year = {2019},
  title = {A Style-Based Generator Architecture for Generative Adversarial
           Networks}, author = {Tero Karras and Samuli Laine and Timo Aila}}
"""


def build_recipe(resolution: int, data_dir: str | os.PathLike | None) -> str:
  """How to prepare ffhq/`resolution`: the text of the missing-data error."""
  return (
      f'FFHQ (ffhq/{resolution}) is not prepared in {data_dir}. Download the '
      f'public FFHQ images1024x1024 folder\n'
      f'(70,000 PNGs, github.com/NVlabs/ffhq-dataset), then build it once:\n'
      f'  python -m gan_jax.data.ffhq --source /path/to/images1024x1024 '
      f'--resolution {resolution} [--data_dir DIR]\n'
      f'or run with --config.data.source_dir=/path/to/images1024x1024 to '
      f'build on first use.')


@dataclasses.dataclass(eq=False)
class FfhqConfig(tfds.core.BuilderConfig):
  """Attributes: resolution: height == width of the stored images."""
  resolution: int = 1024


def builder_config(resolution: int) -> str | FfhqConfig:
  """The predefined config's name, or a custom config for other resolutions."""
  if resolution in RESOLUTIONS:
    return str(resolution)
  if resolution <= 0:
    raise DatasetError(f'FFHQ resolution must be positive, got {resolution}.')
  return FfhqConfig(name=str(resolution), resolution=resolution,
                    description=f'{resolution}x{resolution} RGB')


def find_images(source_dir: str | os.PathLike) -> list[str]:
  """Paths (relative to source_dir) of every *.png under it, by file name."""
  source_dir = os.fspath(source_dir)
  found = []
  for root, dirs, files in os.walk(source_dir):
    dirs.sort()
    found.extend(os.path.relpath(os.path.join(root, name), source_dir)
                 for name in files if name.lower().endswith('.png'))
  return sorted(found, key=lambda path: (os.path.basename(path), path))


def encode_image(path: str, resolution: int,
                 resize_filter: str = DEFAULT_RESIZE_FILTER) -> bytes | None:
  """PNG bytes of the image at `path` as RGB, resolution x resolution.

  Returns None when PIL cannot read the file. Raises DatasetError when the
  image is not square or is smaller than `resolution`.
  """
  conversion = image_files.Conversion(resolution, CHANNELS, fit='refuse',
                                      small='reject',
                                      resize_filter=resize_filter)
  try:
    with open(path, 'rb') as f:
      raw = f.read()
    return image_files.convert(raw, conversion)
  except OSError:
    return None
  except image_files.Unusable as e:
    if e.unreadable:
      return None
    raise DatasetError(f'{path}: {e}; FFHQ images are square and at least '
                       f'the resolution: remove or crop the file.') from e


class Ffhq(tfds.core.GeneratorBasedBuilder):
  """FFHQ from the local images1024x1024 PNGs, resized, RGB, in ArrayRecord."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'images1024x1024 PNGs by file name, PIL resize, ArrayRecord.',
  }
  BUILDER_CONFIGS = [
      FfhqConfig(name=str(r), resolution=r, description=f'{r}x{r} RGB')
      for r in RESOLUTIONS
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the images1024x1024 folder of FFHQ (70,000 PNGs, '
      f'{HOMEPAGE}) in manual_dir, or pass source_dir=.')

  def __init__(self, *, source_dir: str | os.PathLike | None = None,
               resize_filter: str | None = None,
               num_workers: int | None = None, **kwargs):
    """Constructor.

    Args:
      source_dir: the images1024x1024 folder; None: TFDS's manual_dir.
      resize_filter: 'lanczos' or 'box'. None: 'lanczos' when building,
        whatever was used when reading a prepared dataset.
      num_workers: threads that decode and resize; None: min(16, CPUs).
      **kwargs: to `tfds.core.GeneratorBasedBuilder` (data_dir, config, ...).
    """
    if resize_filter is not None and resize_filter not in RESIZE_FILTERS:
      raise DatasetError(f'Unknown resize_filter {resize_filter!r}; known: '
                         f'{sorted(RESIZE_FILTERS)}.')
    self._source_dir = os.fspath(source_dir) if source_dir else None
    self._resize_filter = resize_filter
    self._num_workers = num_workers or min(16, os.cpu_count() or 1)
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    if resize_filter is not None and self.is_prepared():
      built = self.info.metadata['resize_filter']
      if built != resize_filter:
        raise DatasetError(
            f'{self.info.full_name} in {self.data_dir} was built with '
            f'resize_filter={built!r}, not {resize_filter!r}; build that one '
            f'into another data_dir.')

  @property
  def resolution(self) -> int:
    return self.builder_config.resolution

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f'Flickr-Faces-HQ (FFHQ) at {r}x{r}, {CHANNELS} channels (RGB), '
            'read from the local images1024x1024 PNGs in sorted order of file '
            'name and resized with PIL; the filter is in '
            "metadata['resize_filter']. Unlabeled."),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(r, r, CHANNELS)),  # PNG
            'filename': tfds.features.Text(),  # relative to the source folder
        }),
        disable_shuffling=True,  # record i == i-th readable file by name
        homepage=HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(
            resolution=r, channels=CHANNELS,
            resize_filter=self._resize_filter or DEFAULT_RESIZE_FILTER),
    )

  def download_and_prepare(self, *, download_dir=None, download_config=None,
                           **kwargs):
    """As TFDS's; raises DatasetError at once when there is no source."""
    if not self.is_prepared():  # TFDS's manual_dir, as it would pick it
      manual_dir = download_config and download_config.manual_dir
      downloads = download_dir or os.path.join(self.data_dir_root, 'downloads')
      self._source_files(manual_dir or os.path.join(downloads, 'manual'))
    super().download_and_prepare(download_dir=download_dir,
                                 download_config=download_config, **kwargs)

  def _source_files(self, manual_dir) -> tuple[str, list[str]]:
    """(source folder, its PNGs by name): source_dir, else manual_dir."""
    source = os.fspath(self._source_dir or manual_dir)
    files = find_images(source) if os.path.isdir(source) else []
    if not files:
      found = (f'No *.png files found under {source!r}.\n'
               if self._source_dir or os.path.isdir(source) else '')
      raise DatasetError(
          found + build_recipe(self.resolution, self.data_dir_root))
    return source, files

  def _split_generators(self, dl_manager):
    source, files = self._source_files(
        None if self._source_dir else dl_manager.manual_dir)
    return {'train': self._generate_examples(source, files)}

  def _generate_examples(self, source: str, files: list[str]):
    r = self.resolution
    resize_filter = self._resize_filter or DEFAULT_RESIZE_FILTER
    logging.info('ffhq/%d: %d PNGs under %s, %s resize, %d threads', r,
                 len(files), source, resize_filter, self._num_workers)
    paths = [os.path.join(source, name) for name in files]
    encode = functools.partial(encode_image, resolution=r,
                               resize_filter=resize_filter)
    skipped = []
    encoded = image_files.ordered_map(encode, paths, self._num_workers)
    for i, png in enumerate(encoded):
      if png is None:
        logging.warning('ffhq: skipping unreadable %s', paths[i])
        skipped.append(files[i])
      else:
        yield i, {'image': png, 'filename': files[i]}
      if (i + 1) % _LOG_EVERY == 0 or i + 1 == len(files):
        logging.info('ffhq/%d: %d / %d files read, %d skipped', r, i + 1,
                     len(files), len(skipped))
    self.info.metadata.update(num_source_files=len(files),
                              num_skipped=len(skipped), skipped_files=skipped)
    if skipped:  # self.data_dir: the dataset's folder while it is built
      report = os.path.join(os.fspath(self.data_dir), SKIPPED_REPORT)
      with open(report, 'w') as f:
        f.writelines(os.path.join(source, name) + '\n' for name in skipped)
      logging.warning('ffhq: skipped %d unreadable files, listed in %s',
                      len(skipped), SKIPPED_REPORT)
    if len(skipped) == len(files):
      raise DatasetError(f'None of the {len(files)} PNGs under {source!r} '
                         f'could be read (e.g. {files[0]}); not an FFHQ folder '
                         f'or corrupt.')


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m gan_jax.data.ffhq',
      description='Builds ffhq/RESOLUTION as a TFDS dataset from the local '
                  'FFHQ images1024x1024 PNGs.')
  parser.add_argument('--source', help='the images1024x1024 folder '
                      '(default: <data_dir>/downloads/manual)')
  parser.add_argument('--resolution', type=int, required=True,
                      help=f'output height == width, e.g. {RESOLUTIONS}')
  parser.add_argument('--data_dir', help='TFDS data_dir (default: TFDS\'s)')
  parser.add_argument('--filter', choices=sorted(RESIZE_FILTERS),
                      default=DEFAULT_RESIZE_FILTER, help='PIL resize filter')
  parser.add_argument('--workers', type=int,
                      help='decode/resize threads (default: min(16, CPUs))')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  builder = Ffhq(config=builder_config(args.resolution),
                 data_dir=args.data_dir, source_dir=args.source,
                 resize_filter=args.filter, num_workers=args.workers)
  if builder.is_prepared():
    print(f'{builder.info.full_name} is already prepared in '
          f'{builder.data_dir}.')
  builder.download_and_prepare()
  meta = builder.info.metadata
  print(f'{builder.info.full_name}: '
        f'{builder.info.splits["train"].num_examples} images written, '
        f'{meta["num_skipped"]} of {meta["num_source_files"]} files skipped '
        f'({meta["resize_filter"]} resize) -> {builder.data_dir}')
  if meta['num_skipped']:
    print(f'skipped files: {os.path.join(builder.data_dir, SKIPPED_REPORT)}')
  return 0


if __name__ == '__main__':
  cli_errors.run(main)
