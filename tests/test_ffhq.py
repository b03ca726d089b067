"""Tests for gan_jax.data.ffhq on a handful of tiny fake FFHQ PNGs.

The fake source mimics images1024x1024 (subfolders of PNGs) at 16x16 and is
built at resolution 8 with a box filter, so every stored pixel is a 2x2 mean of
source pixels that numpy computes independently.
"""

import io
import os
import pathlib

import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from gan_jax import config_base
from gan_jax.data import ffhq
from gan_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE, RES = 16, 8
READABLE = ('00000/00000.png', '00000/00001.png', '00000/00002.png',
            '00000/00003.png', '00000/00005.png', '01000/00004.png',
            '01000/01000.png', '01000/01003.png')
UNREADABLE = ('01000/01001.png', '01000/01002.png')  # garbage, truncated
# By file name: 01000/00004.png sorts before 00000/00005.png.
ORDER = ('00000/00000.png', '00000/00001.png', '00000/00002.png',
         '00000/00003.png', '01000/00004.png', '00000/00005.png',
         '01000/01000.png', '01000/01003.png')


def rgb_pattern(seed, size=SIZE):
  return np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8)


def png_bytes(image, format='PNG', **options):
  buffer = io.BytesIO()
  image.save(buffer, format=format, **options)
  return buffer.getvalue()


def write_source(root):
  """Writes the fake source; returns {relative path: expected RGB at 16x16}."""
  images = {name: Image.fromarray(rgb_pattern(i)) for i, name in
            enumerate(READABLE)}
  rgba = np.concatenate([rgb_pattern(101), rgb_pattern(102)[..., :1]], -1)
  images['00000/00001.png'] = Image.fromarray(rgba, 'RGBA')  # alpha varies
  images['00000/00002.png'] = Image.fromarray(rgb_pattern(103)[..., 0], 'L')
  images['00000/00003.png'] = Image.fromarray(rgb_pattern(104)).quantize(16)
  files = {name: png_bytes(im) for name, im in images.items()}
  files['01000/01003.png'] = png_bytes(images['01000/01003.png'], 'JPEG')
  files['01000/01001.png'] = b'this is not an image' * 10
  files['01000/01002.png'] = files['01000/01000.png'][:200]
  for name, data in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  # What PIL decodes (the JPEG is lossy), as 3 channels.
  return {name: np.asarray(Image.open(root / name).convert('RGB'))
          for name in READABLE}


def block_mean(image):
  """(16, 16, 3) -> (8, 8, 3): means of 2x2 blocks, in float64."""
  return image.reshape(RES, 2, RES, 2, 3).astype(np.float64).mean((1, 3))


def data_config(data_dir, source_dir, name='ffhq/8', **overrides):
  config = config_base.get_base_config().data
  config.name = name
  config.data_dir = str(data_dir)
  config.source_dir = str(source_dir)
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(config, expected source pixels) of a fake FFHQ built once at 8x8, box."""
  root = tmp_path_factory.mktemp('fake_ffhq')
  expected = write_source(root / 'src')
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(pipeline.DATASETS, 'ffhq/8', pipeline.DatasetEntry(
        ffhq.Ffhq, lambda c: pipeline._ffhq_kwargs(RES, c)))
    config = data_config(root / 'tfds', root / 'src')
    config.resize_filter = 'box'
    pipeline.load_builder(config)
    yield config, expected


def records(builder):
  source = builder.as_data_source('train')
  return [source[i] for i in range(len(source))]


def test_counts_and_skipped_report(built):
  config, _ = built
  builder = pipeline.load_builder(config, build=False)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == len(READABLE)
  assert builder.info.file_format.value == 'array_record'
  meta = builder.info.metadata
  assert meta['num_source_files'] == len(READABLE) + len(UNREADABLE)
  assert meta['num_skipped'] == 2
  assert meta['skipped_files'] == list(UNREADABLE)
  assert (meta['resolution'], meta['channels'], meta['resize_filter']) == (
      RES, 3, 'box')
  report = (pathlib.Path(builder.data_dir) / ffhq.SKIPPED_REPORT).read_text()
  assert report.splitlines() == [os.path.join(config.source_dir, name)
                                 for name in UNREADABLE]


def test_records_sorted_by_file_name(built):
  config, _ = built
  names = [r['filename'].decode() for r in
           records(pipeline.load_builder(config, build=False))]
  assert tuple(names) == ORDER
  assert ffhq.find_images(config.source_dir) == sorted(
      READABLE + UNREADABLE, key=os.path.basename)


def test_box_downscale_is_2x2_mean_of_rgb(built):
  """Covers RGB, RGBA (alpha dropped), grayscale, palette and a JPEG in .png."""
  config, expected = built
  for record in records(pipeline.load_builder(config, build=False)):
    name = record['filename'].decode()
    image = record['image']
    assert image.shape == (RES, RES, 3) and image.dtype == np.uint8, name
    np.testing.assert_allclose(image, block_mean(expected[name]), atol=1,
                               err_msg=name)
  gray = expected['00000/00002.png']
  assert (gray[..., 0] == gray[..., 2]).all()
  rgba = np.asarray(Image.open(pathlib.Path(config.source_dir) /
                               '00000/00001.png'))
  np.testing.assert_array_equal(expected['00000/00001.png'], rgba[..., :3])


def test_data_info_is_unconditional_rgb(built):
  config, _ = built
  assert pipeline.dataset_info(config) == pipeline.DataInfo(
      resolution=RES, channels=3, num_classes=0, num_examples=len(READABLE))


def test_input_pipeline_batches(built):
  config, _ = built
  stored = np.stack([r['image'] for r in
                     records(pipeline.load_builder(config, build=False))])
  with pipeline.InputPipeline(config, 4, seed=3) as data:
    batches = [next(data) for _ in range(3)]
    indices = [data._sampler.local_batch(s)[0] for s in range(3)]
  for batch, idx in zip(batches, indices):
    assert batch['image'].shape == (4, RES, RES, 3)
    assert batch['image'].dtype == np.float32
    assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
    np.testing.assert_array_equal(batch['image'],
                                  pipeline.to_model_range(stored[idx]))
    np.testing.assert_array_equal(batch['label'], np.zeros(4, np.int32))


def test_rebuild_gives_identical_records(built, tmp_path):
  config, _ = built
  again = ffhq.Ffhq(config=ffhq.builder_config(RES), data_dir=tmp_path,
                    source_dir=config.source_dir, resize_filter='box',
                    num_workers=3)
  again.download_and_prepare()
  first = records(pipeline.load_builder(config, build=False))
  for a, b in zip(first, records(again), strict=True):
    assert a['filename'] == b['filename']
    np.testing.assert_array_equal(a['image'], b['image'])


def test_other_filter_than_built_raises(built):
  config, _ = built
  with pytest.raises(pipeline.DatasetError,
                     match="built with resize_filter='box'"):
    pipeline.load_builder(data_config(config.data_dir, config.source_dir,
                                      name='ffhq/8', resize_filter='lanczos'))


def test_registry_ffhq_256_lanczos_and_unchanged_at_resolution(tmp_path):
  src = tmp_path / 'images1024x1024' / '00000'
  src.mkdir(parents=True)
  # Not PIL's default compression, so a re-encoded copy would differ.
  at_256 = png_bytes(Image.fromarray(rgb_pattern(1, 256)), compress_level=1)
  (src / '00000.png').write_bytes(at_256)
  big = Image.fromarray(rgb_pattern(2, 512))
  (src / '00001.png').write_bytes(png_bytes(big))
  config = data_config(tmp_path / 'tfds', src.parent, name='ffhq/256')
  assert pipeline.dataset_info(config) == pipeline.DataInfo(256, 3, 0, 2)
  builder = pipeline.load_builder(config)
  assert builder.info.metadata['resize_filter'] == 'lanczos'
  assert builder.info.full_name == 'ffhq/256/1.0.0'
  first, second = records(builder)
  np.testing.assert_array_equal(first['image'], rgb_pattern(1, 256))
  assert ffhq.encode_image(str(src / '00000.png'), 256) == at_256
  np.testing.assert_array_equal(
      second['image'],
      np.asarray(big.resize((256, 256), Image.Resampling.LANCZOS)))


def test_manual_dir_is_the_source_when_no_source_dir(tmp_path):
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'  # TFDS's default
  manual.mkdir(parents=True)
  (manual / '00000.png').write_bytes(png_bytes(Image.fromarray(rgb_pattern(0))))
  explicit = tmp_path / 'elsewhere'  # as `tfds build --manual_dir` passes it
  explicit.mkdir()
  for i in (1, 2):
    (explicit / f'0000{i}.png').write_bytes(
        png_bytes(Image.fromarray(rgb_pattern(i))))
  default = ffhq.Ffhq(config=ffhq.builder_config(RES),
                      data_dir=tmp_path / 'tfds', resize_filter='box')
  default.download_and_prepare()
  assert default.info.splits['train'].num_examples == 1
  other = ffhq.Ffhq(config=ffhq.builder_config(RES),
                    data_dir=tmp_path / 'tfds2', resize_filter='box')
  other.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=explicit))
  assert [r['filename'] for r in records(other)] == [b'00001.png',
                                                      b'00002.png']


def test_non_square_image_raises_naming_file(tmp_path):
  (tmp_path / 'src').mkdir()
  path = tmp_path / 'src' / '00007.png'
  path.write_bytes(png_bytes(Image.fromarray(rgb_pattern(0)[:, :12])))
  builder = ffhq.Ffhq(config=ffhq.builder_config(RES), data_dir=tmp_path / 'd',
                      source_dir=tmp_path / 'src')
  with pytest.raises(pipeline.DatasetError, match='00007.png: image is 12x16'):
    builder.download_and_prepare()
  assert not builder.is_prepared()


def test_no_readable_image_raises(tmp_path):
  (tmp_path / 'src').mkdir()
  (tmp_path / 'src' / '00000.png').write_bytes(b'junk')
  builder = ffhq.Ffhq(config=ffhq.builder_config(RES), data_dir=tmp_path / 'd',
                      source_dir=tmp_path / 'src')
  with pytest.raises(pipeline.DatasetError, match='None of the 1 PNGs'):
    builder.download_and_prepare()


def test_missing_dataset_without_source_raises_recipe(tmp_path):
  config = data_config(tmp_path, '', name='ffhq/256')  # '': the base config's, none given
  with pytest.raises(pipeline.DatasetError) as e:
    pipeline.load_builder(config)
  message = str(e.value)
  assert message == ffhq.build_recipe(256, tmp_path)
  assert message.startswith(f'FFHQ (ffhq/256) is not prepared in {tmp_path}.')
  assert ('python -m gan_jax.data.ffhq --source /path/to/images1024x1024 '
          '--resolution 256 [--data_dir DIR]') in message
  assert '--config.data.source_dir=' in message
  assert not (tmp_path / 'ffhq').exists()  # raised before TFDS wrote anything


def test_source_dir_without_pngs_raises(tmp_path):
  config = data_config(tmp_path / 'tfds', tmp_path, name='ffhq/1024')
  with pytest.raises(pipeline.DatasetError,
                     match=r'No \*\.png files found(.|\n)*--resolution 1024'):
    pipeline.dataset_info(config)


def test_experiment_config_256_raises_before_any_model(tmp_path):
  config = config_base.load(f'{REPO / "experiments" / "ffhq.py"}:256',
                            {'data.data_dir': str(tmp_path)})
  assert config.data.name == 'ffhq/256'
  with pytest.raises(pipeline.DatasetError,
                     match='python -m gan_jax.data.ffhq'):
    pipeline.dataset_info(config.data)


def test_command_line_builds_and_reports(built, tmp_path, capsys):
  config, _ = built
  argv = ['--source', config.source_dir, '--resolution', str(RES),
          '--data_dir', str(tmp_path), '--filter', 'box', '--workers', '2']
  assert ffhq.main(argv) == 0
  out = capsys.readouterr().out
  assert f'{len(READABLE)} images written, 2 of 10 files skipped' in out
  assert ffhq.SKIPPED_REPORT in out
  with pytest.raises(pipeline.DatasetError, match='python -m gan_jax.data.ffhq'):
    ffhq.main(['--resolution', '256', '--data_dir', str(tmp_path)])


def test_unknown_filter_raises():
  with pytest.raises(pipeline.DatasetError, match='Unknown resize_filter'):
    ffhq.Ffhq(config='256', resize_filter='bicubic')
