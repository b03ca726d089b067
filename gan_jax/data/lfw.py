"""A 100-image faces dataset for few-shot runs: `lfw_faces`, built offline.

scikit-image ships a subset of Labeled Faces in the Wild (Huang et al.),
`skimage.data.lfw_subset()`: 200 grayscale 25x25 float images in [0, 1], the
first 100 faces, the rest background patches. This builder stores the 100
faces, upsampled to 32x32 (the smallest power of two above 25) with PIL's
Lanczos filter on the float values (mode 'F', so no rounding before the
resize), then scaled by 255, rounded and clipped to uint8: 1 channel,
unlabeled, in the order skimage returns them. It is built on first use with
`config.data.name='lfw_faces'`, from files already installed with
scikit-image; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from gan_jax.data.errors import DatasetError

NUM_FACES = 100  # skimage's first 100 images are faces
SOURCE_SIZE = 25
RESOLUTION = 32
CHANNELS = 1
RESIZE_FILTER = 'lanczos'

_CITATION = """\
@techreport{LFWTech, author = {Gary B. Huang and Manu Ramesh and Tamara Berg
  and Erik Learned-Miller}, title = {Labeled Faces in the Wild: A Database for
  Studying Face Recognition in Unconstrained Environments},
  institution = {University of Massachusetts, Amherst}, number = {07-49},
  year = {2007}}
"""


def load_faces() -> np.ndarray:
  """skimage's 100 LFW faces, float64 (100, 25, 25) in [0, 1]."""
  try:
    from skimage import data  # pylint: disable=g-import-not-at-top
    faces = np.asarray(data.lfw_subset()[:NUM_FACES], np.float64)
  except (ImportError, OSError, ValueError) as e:
    raise DatasetError(f'lfw_faces needs scikit-image\'s lfw_subset data '
                       f'(pip install scikit-image): {e}') from e
  if faces.shape != (NUM_FACES, SOURCE_SIZE, SOURCE_SIZE):
    raise DatasetError(f'skimage.data.lfw_subset() gave {faces.shape}, '
                       f'expected ({NUM_FACES}, {SOURCE_SIZE}, '
                       f'{SOURCE_SIZE}).')
  return faces


def resize_faces(faces: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
  """(N, h, w) floats in [0, 1] -> (N, r, r, 1) uint8, PIL Lanczos in float."""
  out = []
  for face in faces:
    image = Image.fromarray(np.asarray(face, np.float32), 'F')
    resized = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    out.append(np.asarray(resized, np.float64))
  pixels = np.rint(np.clip(np.stack(out) * 255.0, 0.0, 255.0))
  return pixels.astype(np.uint8)[..., None]


class LfwFaces(tfds.core.GeneratorBasedBuilder):
  """skimage's 100 LFW faces, 32x32 grayscale, in ArrayRecord."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'skimage lfw_subset faces, Lanczos 25->32.'}

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            f'The {NUM_FACES} faces of skimage.data.lfw_subset() (Labeled '
            f'Faces in the Wild), {SOURCE_SIZE}x{SOURCE_SIZE} grayscale '
            f'upsampled to {RESOLUTION}x{RESOLUTION} with PIL Lanczos. '
            'Unlabeled.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(RESOLUTION, RESOLUTION, CHANNELS)),
        }),
        disable_shuffling=True,  # record i == skimage's face i
        homepage='http://vis-www.cs.umass.edu/lfw/',
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(
            resolution=RESOLUTION, channels=CHANNELS,
            source_resolution=SOURCE_SIZE, resize_filter=RESIZE_FILTER),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {'train': self._generate_examples(resize_faces(load_faces()))}

  def _generate_examples(self, images):
    for i, image in enumerate(images):
      yield i, {'image': image}
