"""Your own images as a TFDS dataset: `prepared/NAME`, trainable by name.

  python -m gan_jax.data.prepare --source DIR_OR_ZIP --name NAME --resolution R \
      [--data_dir DIR] [--labels none|subfolders|dataset.json] [--fit crop|pad] \
      [--filter lanczos|box] [--small reject|upscale] [--channels 3|1]
  python -m gan_jax.main --config experiments/fashion_mnist.py \
      --config.data.name=prepared/NAME [--config.data.data_dir=DIR] --workdir runs/NAME

The source is a folder (searched recursively) or a .zip (read directly); every
file with an image extension (`image_files.EXTENSIONS`) is read, in sorted order
of its relative path, converted by `image_files.convert` (square by centre
--fit crop or black pad, --channels 3 RGB or 1 grayscale, resized with PIL's
--filter; smaller images are upscaled or rejected per --small) and written as
ArrayRecord to <data_dir>/prepared/NAME/1.0.0, where `pipeline.load_builder`
reads it. Resolution, channels, labels (num_classes, class names), fit and
filter are in the dataset info, so a run takes them from there.

Labels (--labels): 'none'; 'subfolders': the top-level folder of each image is
its class (class i = the i-th folder name in sorted order); 'dataset.json': a
file of that name at the source's root in NVIDIA's format
{"labels": [["dir/img.png", 3], ...]} with integer classes 0..C-1 (images it
does not list are skipped). Conditional runs (`--config.model.conditional=True`)
get the class count from the dataset.

Unreadable or rejected files are skipped, counted and listed with the reason in
skipped_files.txt in the dataset's folder. A source with no usable image is an
error. The dataset is built in a temporary folder beside the target and swapped
in by renames only when complete, so a failed or interrupted prepare leaves an
existing dataset of that name intact.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import threading
import uuid
import zipfile
import zlib

from absl import logging
import tensorflow_datasets as tfds
import tqdm

from gan_jax import cli_errors
from gan_jax import config_check
from gan_jax.data import image_files
from gan_jax.data.errors import DatasetError

PREFIX = 'prepared/'  # config.data.name = PREFIX + NAME
BUILDER_NAME = 'prepared'  # the TFDS name of `Prepared`
VERSION = '1.0.0'
LABELS = ('none', 'subfolders', 'dataset.json')
LABELS_FILE = 'dataset.json'
SKIPPED_REPORT = 'skipped_files.txt'
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def check_name(name: str) -> None:
  if not _NAME_RE.match(name or ''):
    raise DatasetError(f'Dataset name {name!r}: use letters, digits, "_", '
                       f'"-" and "." (starting with a letter or digit).')


def default_data_dir() -> str:
  return os.fspath(tfds.core.constants.DATA_DIR)


def dataset_dir(name: str, data_dir: str | os.PathLike | None) -> str:
  """<data_dir>/prepared/NAME: the folder the swap replaces as a whole."""
  return os.path.join(os.fspath(data_dir or default_data_dir()),
                      BUILDER_NAME, name)


def recipe(name: str, data_dir: str | os.PathLike | None) -> str:
  data_dir = os.fspath(data_dir or default_data_dir())
  return (f'Prepared dataset {PREFIX}{name} not found in {data_dir} (no '
          f'{os.path.join(dataset_dir(name, data_dir), VERSION)}). Prepare it '
          f'once from a folder or zip of images:\n'
          f'  python -m gan_jax.data.prepare --source DIR_OR_ZIP --name {name} '
          f'--resolution R --data_dir {data_dir} '
          f'[--labels none|subfolders|dataset.json]')


class Source:
  """The image files of a folder (recursive) or a zip, by relative path."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._zip = None
    self._lock = threading.Lock()
    if os.path.isdir(self.path):
      names = []
      for root, dirs, files in os.walk(self.path):
        dirs.sort()
        rel = os.path.relpath(root, self.path).replace(os.sep, '/')
        names.extend(name if rel == '.' else f'{rel}/{name}'
                     for name in files)
    elif zipfile.is_zipfile(self.path):
      self._zip = zipfile.ZipFile(self.path)
      names = [info.filename for info in self._zip.infolist()
               if not info.is_dir()
               and not info.filename.startswith('__MACOSX/')]
    elif os.path.exists(self.path):
      raise DatasetError(f'--source {self.path!r} is neither a folder nor a '
                         f'zip file.')
    else:
      raise DatasetError(f'--source {self.path!r} does not exist.')
    self.all_names = set(names)
    self.images = sorted(n for n in names if image_files.is_image_name(n))

  def read(self, name: str) -> bytes:
    if self._zip is None:
      with open(os.path.join(self.path, name), 'rb') as f:
        return f.read()
    with self._lock:
      return self._zip.read(name)

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()


def find_labels(source: Source, mode: str) -> tuple[dict[str, int] | None,
                                                    list[str]]:
  """({relative path: class} or None, class names) per --labels `mode`."""
  if mode == 'none':
    return None, []
  if mode == 'subfolders':
    at_root = [n for n in source.images if '/' not in n]
    if at_root:
      raise DatasetError(
          f'--labels subfolders: {len(at_root)} images are not in a class '
          f'folder (e.g. {at_root[0]!r}); put every image under '
          f'<source>/<class name>/, or use --labels none.')
    names = sorted({n.split('/', 1)[0] for n in source.images})
    index = {name: i for i, name in enumerate(names)}
    return {n: index[n.split('/', 1)[0]] for n in source.images}, names
  if mode != LABELS_FILE:
    raise DatasetError(f'--labels {mode!r}; expected one of {LABELS}.')
  if LABELS_FILE not in source.all_names:
    raise DatasetError(f'--labels dataset.json: no {LABELS_FILE} at the root '
                       f'of {source.path!r}. Write {{"labels": [["dir/img.png",'
                       f' 0], ...]}} there, or use --labels none|subfolders.')
  try:
    entries = json.loads(source.read(LABELS_FILE))['labels']
    labels = {_normalize(path): label for path, label in entries}
  except (ValueError, KeyError, TypeError) as e:
    raise DatasetError(f'{LABELS_FILE} in {source.path!r} is not NVIDIA\'s '
                       f'format {{"labels": [["dir/img.png", 3], ...]}}: '
                       f'{type(e).__name__}: {e}') from e
  bad = [(p, c) for p, c in labels.items()
         if isinstance(c, bool) or not isinstance(c, int) or c < 0]
  if bad:
    raise DatasetError(f'{LABELS_FILE}: labels must be class indices >= 0; '
                       f'{len(bad)} are not (e.g. {bad[0]}).')
  if not labels:
    raise DatasetError(f'{LABELS_FILE} in {source.path!r} lists no labels.')
  return labels, [str(c) for c in range(max(labels.values()) + 1)]


def _normalize(path) -> str:
  path = str(path).replace('\\', '/')
  return path[2:] if path.startswith('./') else path


class PreparedConfig(tfds.core.BuilderConfig):
  """One prepared dataset: its name and how its images were converted."""

  def __init__(self, *, name: str, conversion: image_files.Conversion,
               labels: str, class_names: list[str]):
    super().__init__(name=name,
                     description=f'{name}: images prepared by gan_jax')
    self.conversion = conversion
    self.labels = labels
    self.class_names = list(class_names)


class Prepared(tfds.core.GeneratorBasedBuilder):
  """Images from a folder or zip, converted to one square shape, ArrayRecord."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'gan_jax.data.prepare: PIL conversion, '
                                 'ArrayRecord.'}

  def __init__(self, *, source: Source, labels: dict[str, int] | None,
               num_workers: int | None = None, progress: bool = True,
               **kwargs):
    self._source = source
    self._labels = labels
    self._num_workers = num_workers or min(16, os.cpu_count() or 1)
    self._progress = progress
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    c = cfg.conversion
    features = {
        'image': tfds.features.Image(shape=(c.resolution, c.resolution,
                                            c.channels)),
        'filename': tfds.features.Text(),  # relative to the source
    }
    if cfg.labels != 'none':
      features['label'] = tfds.features.ClassLabel(names=cfg.class_names)
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f'{cfg.name}: {c.resolution}x{c.resolution}, '
                     f'{c.channels} channels, from {self._source.path} '
                     f'(fit={c.fit}, {c.resize_filter} resize, '
                     f'small={c.small}, labels={cfg.labels}).'),
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,  # record order == sorted relative paths
        metadata=tfds.core.MetadataDict(
            resolution=c.resolution, channels=c.channels, fit=c.fit,
            small=c.small, resize_filter=c.resize_filter, labels=cfg.labels,
            num_classes=len(cfg.class_names), class_names=cfg.class_names,
            source=self._source.path),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {'train': self._generate_examples()}

  def _convert(self, name: str) -> bytes | image_files.Unusable:
    conversion = self.builder_config.conversion
    try:
      return image_files.convert(self._source.read(name), conversion)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      return image_files.Unusable(f'unreadable: {type(e).__name__}: {e}',
                                  unreadable=True)
    except image_files.Unusable as e:
      return e

  def _generate_examples(self):
    names = self._source.images
    skipped = []  # (relative path, reason)
    todo = []
    for name in names:
      if self._labels is not None and name not in self._labels:
        skipped.append((name, f'no label in {LABELS_FILE}'))
      else:
        todo.append(name)
    bar = tqdm.tqdm(total=len(names), unit='img', disable=not self._progress,
                    desc=f'{PREFIX}{self.builder_config.name}',
                    initial=len(skipped))
    written = 0
    results = image_files.ordered_map(self._convert, todo, self._num_workers)
    for name, png in zip(todo, results):
      bar.update(1)
      if isinstance(png, image_files.Unusable):
        logging.warning('prepare: skipping %s: %s', name, png)
        skipped.append((name, str(png)))
        continue
      example = {'image': png, 'filename': name}
      if self._labels is not None:
        example['label'] = self._labels[name]
      yield written, example
      written += 1
    bar.close()
    skipped.sort()
    self.info.metadata.update(
        num_source_files=len(names), num_skipped=len(skipped),
        skipped_files=[name for name, _ in skipped])
    if skipped:  # self.data_dir: the dataset's folder while it is built
      with open(os.path.join(os.fspath(self.data_dir), SKIPPED_REPORT),
                'w') as f:
        f.writelines(f'{name}\t{reason}\n' for name, reason in skipped)
    if not written:
      example = f' (e.g. {skipped[0][0]}: {skipped[0][1]})' if skipped else ''
      raise DatasetError(f'None of the {len(names)} image files under '
                         f'{self._source.path!r} could be used{example}.')


def _swap_in(built: str, final: str) -> None:
  """Replaces folder `final` by `built` by renames; `final` survives errors."""
  old = None
  if os.path.exists(final):
    old = f'{final}.old-{uuid.uuid4().hex[:8]}'
    os.rename(final, old)
  try:
    os.rename(built, final)
  except BaseException:
    if old is not None:
      os.rename(old, final)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def prepare(source: str | os.PathLike, name: str, resolution: int,
            data_dir: str | os.PathLike | None = None, labels: str = 'none',
            fit: str = 'crop', resize_filter: str = 'lanczos',
            small: str = 'reject', channels: int = 3,
            num_workers: int | None = None,
            progress: bool = True) -> tfds.core.DatasetBuilder:
  """Builds prepared/`name` (see the module docstring); returns its reader.

  Raises:
    DatasetError: bad arguments, a missing or empty source, bad labels, or no
      usable image. An existing dataset of that name is then left as it was.
  """
  check_name(name)
  try:  # the check training makes, before anything is written
    config_check.validate_resolution(resolution, '--resolution')
  except config_check.ConfigError as e:
    raise DatasetError(f'prepare: {e}') from None
  try:
    conversion = image_files.Conversion(resolution, channels, fit, small,
                                        resize_filter)
  except ValueError as e:
    raise DatasetError(f'prepare: {e}') from e
  data_dir = os.fspath(data_dir or default_data_dir())
  final = dataset_dir(name, data_dir)
  src = Source(source)
  tmp_root = None
  try:
    if not src.images:
      raise DatasetError(
          f'No image files ({", ".join(image_files.EXTENSIONS)}) in '
          f'{src.path!r}; point --source at the folder or zip of images.')
    label_map, class_names = find_labels(src, labels)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    # Beside the target (same filesystem, so the renames are atomic).
    tmp_root = f'{final}.tmp-{uuid.uuid4().hex[:8]}'
    builder = Prepared(
        config=PreparedConfig(name=name, conversion=conversion, labels=labels,
                              class_names=class_names),
        data_dir=tmp_root, source=src, labels=label_map,
        num_workers=num_workers, progress=progress)
    builder.download_and_prepare()
    _swap_in(os.path.join(tmp_root, BUILDER_NAME, name), final)
  finally:
    src.close()
    if tmp_root is not None:
      shutil.rmtree(tmp_root, ignore_errors=True)
  return load(name, data_dir)


def load(name: str,
         data_dir: str | os.PathLike | None) -> tfds.core.DatasetBuilder:
  """The reader of prepared/`name` in `data_dir`; DatasetError if missing."""
  check_name(name)
  path = os.path.join(dataset_dir(name, data_dir), VERSION)
  if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
    raise DatasetError(recipe(name, data_dir))
  return tfds.builder_from_directory(path)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m gan_jax.data.prepare',
      description='Writes a folder or zip of images as the TFDS dataset '
                  'prepared/NAME (train: --config.data.name=prepared/NAME).')
  parser.add_argument('--source', required=True, help='folder or .zip')
  parser.add_argument('--name', required=True, help='dataset name')
  parser.add_argument('--resolution', type=int, required=True,
                      help='output height == width in pixels')
  parser.add_argument('--data_dir', help="TFDS data_dir (default: TFDS's)")
  parser.add_argument('--labels', choices=LABELS, default='none')
  parser.add_argument('--fit', choices=('crop', 'pad'), default='crop',
                      help='non-square: centre crop or black padding')
  parser.add_argument('--filter', choices=sorted(image_files.RESIZE_FILTERS),
                      default='lanczos', help='PIL resize filter')
  parser.add_argument('--small', choices=image_files.SMALL, default='reject',
                      help='images smaller than the resolution')
  parser.add_argument('--channels', type=int, choices=image_files.CHANNELS,
                      default=3, help='3: RGB, 1: grayscale')
  parser.add_argument('--workers', type=int,
                      help='decode/resize threads (default: min(16, CPUs))')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()  # ours counts images
  builder = prepare(args.source, args.name, args.resolution, args.data_dir,
                    labels=args.labels, fit=args.fit,
                    resize_filter=args.filter, small=args.small,
                    channels=args.channels, num_workers=args.workers)
  meta = builder.info.metadata
  classes = (f'{meta["num_classes"]} classes ({meta["labels"]})'
             if meta['num_classes'] else 'unlabeled')
  print(f'{PREFIX}{args.name}: {builder.info.splits["train"].num_examples} '
        f'images written, {meta["num_skipped"]} of {meta["num_source_files"]} '
        f'files skipped; {meta["resolution"]}x{meta["resolution"]}, '
        f'{meta["channels"]} channels, {classes}, fit={meta["fit"]}, '
        f'{meta["resize_filter"]} resize -> {builder.data_dir}')
  if meta['num_skipped']:
    print(f'skipped files: {os.path.join(builder.data_dir, SKIPPED_REPORT)}')
  return 0


if __name__ == '__main__':
  cli_errors.run(main)
