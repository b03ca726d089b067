"""The studio's HTTP API (gan_jax.tools.studio) through starlette's TestClient: no browser."""

import concurrent.futures
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from gan_jax.images import save_png
from gan_jax.tools import directions
from gan_jax.tools import generate
from gan_jax.tools import loading
from gan_jax.tools import studio
from gan_jax.tools import studio_render
from tests import tiny_generator

SG3_FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs_sg3' / 'g_t.npz'


def make_directions(g, path):
  """A directions file with one direction: the first principal axis of 256 sampled ws."""
  ws = directions.sample_ws(g, 256, seed=0)
  stats = directions.statistics(g, ws)
  axes, _ = directions.pca_directions(ws, 1)
  table = directions.add(None, g, stats, [directions.entry(stats, 'pc1', axes[0], 'pca', 'all',
                                                           'test')])
  directions.save(path, table)
  return path


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('studio')
  g = loading.load_generator(tiny_generator.make_export(root / 'export'))
  table = directions.load(make_directions(g, os.fspath(root / 'dirs.npz')))
  renderer = studio_render.Renderer(g, table, project_steps=3)
  # A fake workdir: two sample grids, a metrics.jsonl (last line half written), a secret file.
  run = root / 'run'
  run.mkdir()
  for step in (0, 100):
    save_png(run / f'samples_{step:07d}.png', np.full((8, 8, 1), step, np.uint8))
  (run / 'metrics.jsonl').write_text(
      json.dumps({'step': 100, 'kimg': 1.0, 'metric': 'fid2k', 'value': 80.0}) + '\n' +
      json.dumps({'step': 50, 'kimg': 0.5, 'metric': 'fid2k', 'value': 90.0}) + '\n{"step": 1')
  (root / 'secret.png').write_bytes(b'not yours')
  client = TestClient(studio.make_app(renderer, os.fspath(run)))
  return g, client


def png(response):
  assert response.status_code == 200, response.text
  assert response.headers['content-type'] == 'image/png'
  return np.asarray(Image.open(io.BytesIO(response.content)))


def test_info_and_page(setup):
  _, client = setup
  info = client.get('/api/info').json()
  assert (info['resolution'], info['num_ws'], info['z_dim']) == (32, 8, 16)
  assert [d['name'] for d in info['directions']] == ['pc1'] and info['run']
  page = client.get('/')
  assert page.status_code == 200 and 'id="image"' in page.text
  assert 'http://' not in page.text.replace('http://www.w3.org/2000/svg', '')  # nothing fetched


def test_render_matches_generate_and_reacts(setup):
  g, client = setup
  a = png(client.get('/api/render?seed=3&psi=1'))
  np.testing.assert_array_equal(a, generate.generate_images(g, [3])[0, ..., 0])
  np.testing.assert_array_equal(a, png(client.get('/api/render?seed=3')))
  for query in ('seed=4', 'seed=3&psi=0.5', 'seed=3&mix_seed=7&mix_layers=0-3',
                'seed=3&d.pc1=3', 'seed=3&noise=random', 'seed=3&z=' + ','.join(['0.5'] * 16)):
    assert np.any(png(client.get('/api/render?' + query)) != a), query
  np.testing.assert_array_equal(png(client.get('/api/render?seed=3&d.pc1=0')), a)


@pytest.mark.parametrize('query, message', [
    ('seed=1&d.nope=2', "unknown direction 'nope'"),
    ('seed=1&noise=loud', 'noise must be one of'),
    ('seed=x', 'bad parameter'),
    ('seed=1&mix_seed=2&mix_layers=fine', 'no fine range'),
    ('seed=1&tx=0.2', 'StyleGAN3 only'),
    ('latent=p999', 'no projection'),
    ('z=1,2', 'z must hold 16 numbers'),
])
def test_render_errors(setup, query, message):
  _, client = setup
  response = client.get('/api/render?' + query)
  assert response.status_code == 400 and message in response.json()['error']


def test_project_upload(setup):
  g, client = setup
  target = generate.generate_images(g, [5])[0, ..., 0]
  buf = io.BytesIO()
  Image.fromarray(target).resize((48, 40)).save(buf, format='PNG')  # not square: cropped
  body = client.post('/api/project', files={'file': ('t.png', buf.getvalue())}).json()
  assert body['latent'] == 'p1' and body['target'].startswith('data:image/png;base64,')
  projected = png(client.get('/api/render?latent=p1'))
  assert projected.shape == (32, 32)
  assert np.any(png(client.get('/api/render?latent=p1&d.pc1=2')) != projected)
  bad = client.post('/api/project', files={'file': ('t.png', b'not an image')})
  assert bad.status_code == 400 and 'not an image file' in bad.json()['error']
  missing = client.post('/api/project', data={'x': '1'})
  assert missing.status_code == 400 and 'no file' in missing.json()['error']


def test_run_files(setup):
  _, client = setup
  run = client.get('/api/run').json()
  assert run['samples'] == ['samples_0000000.png', 'samples_0000100.png']
  assert run['metrics'] == {'fid2k': [[50, 90.0], [100, 80.0]]}
  assert png(client.get('/api/run/image/samples_0000100.png')).max() == 100
  for name in ('..%2Fsecret.png', 'secret.png', 'metrics.jsonl', 'samples_0000200.png'):
    assert client.get('/api/run/image/' + name).status_code == 404, name


def test_no_run_for_an_export(setup):
  g, _ = setup
  client = TestClient(studio.make_app(studio_render.Renderer(g)))
  assert not client.get('/api/info').json()['run']
  assert client.get('/api/run').status_code == 404
  assert client.get('/api/run/image/samples_0000000.png').status_code == 404
  response = client.get('/api/render?d.pc1=1')
  assert response.status_code == 400 and '--directions' in response.json()['error']


def test_concurrent_renders_match_serial(setup):
  """Several clients at once: renders from 8 threads equal the same renders one at a time."""
  g, client = setup
  queries = [f'/api/render?seed={s % 4}&psi={0.5 + 0.1 * (s % 3)}&d.pc1={s % 2}' for s in range(16)]
  serial = [png(client.get(q)) for q in queries]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    parallel = list(pool.map(lambda q: png(client.get(q)), queries))
  for q, a, b in zip(queries, serial, parallel):
    np.testing.assert_array_equal(a, b, err_msg=q)


def test_stylegan3_translate_rotate():
  """StyleGAN3 (NVIDIA's tiny T fixture): tx/ty/rotate are the tools' --translate / --rotate."""
  from gan_jax.models import stylegan3  # pylint: disable=g-import-not-at-top
  g = loading.load_generator(SG3_FIXTURE)
  client = TestClient(studio.make_app(studio_render.Renderer(g)))
  assert client.get('/api/info').json()['transform']
  plain = png(client.get('/api/render?seed=3'))
  moved = png(client.get('/api/render?seed=3&tx=0.2&ty=-0.1&rotate=25'))
  want = generate.generate_images(
      g, [3], transform=stylegan3.user_transform((0.2, -0.1), 25.0))[0]
  np.testing.assert_array_equal(moved, want.squeeze())
  np.testing.assert_array_equal(plain, generate.generate_images(
      g, [3], transform=stylegan3.user_transform())[0].squeeze())
  assert np.any(moved != plain)


def test_conditional_class(tmp_path):
  g = loading.load_generator(tiny_generator.make_export(tmp_path / 'cond', c_dim=3))
  client = TestClient(studio.make_app(studio_render.Renderer(g)))
  assert client.get('/api/info').json()['c_dim'] == 3
  one = png(client.get('/api/render?seed=2&class=1'))
  np.testing.assert_array_equal(one, generate.generate_images(g, [2], class_idx=1)[0, ..., 0])
  assert np.any(png(client.get('/api/render?seed=2&class=2')) != one)
  response = client.get('/api/render?seed=2&class=3')
  assert response.status_code == 400 and 'class must lie in [0, 3)' in response.json()['error']


def test_build_from_an_export_with_directions(setup, tmp_path):
  """The command line's path: load_generator + the directions file; an export shows no run."""
  g, _ = setup
  export_dir = tiny_generator.make_export(tmp_path / 'export')
  client = TestClient(studio.build(export_dir, make_directions(g, os.fspath(tmp_path / 'd.npz')),
                                   project_steps=2))
  info = client.get('/api/info').json()
  assert info['directions'][0]['name'] == 'pc1' and not info['run']
  assert info['project_steps'] == 2
  np.testing.assert_array_equal(png(client.get('/api/render?seed=3')),
                                generate.generate_images(g, [3])[0, ..., 0])
