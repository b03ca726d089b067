"""The studio page in a real browser: Debian's chromium (apt) driven by Playwright.

Skipped, saying why, when no chromium binary is installed (`apt-get install -y chromium`);
Playwright's own browser downloads are never used. Set STUDIO_SCREENSHOTS=DIR to also save the
page's screenshots (the README's come from this test).
"""

import io
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from gan_jax.images import save_png
from gan_jax.tools import directions
from gan_jax.tools import generate
from gan_jax.tools import loading
from gan_jax.tools import studio
from gan_jax.tools import studio_render
from tests import test_studio
from tests import tiny_generator

CHROMIUM = next((p for p in ('/usr/bin/chromium', shutil.which('chromium') or '',
                             shutil.which('chromium-browser') or '') if p and os.path.exists(p)),
                None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason='no chromium binary (/usr/bin/chromium or chromium on PATH): install '
    'it with apt-get install -y chromium to run the browser tests')


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  import uvicorn  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('studio_browser')
  g = loading.load_generator(tiny_generator.make_export(root / 'export'))
  table = directions.load(test_studio.make_directions(g, os.fspath(root / 'dirs.npz')))
  run = root / 'run'
  run.mkdir()
  grids = generate.generate_images(g, range(16))
  for step in (0, 100, 200):
    save_png(run / f'samples_{step:07d}.png',
             np.concatenate([np.concatenate(list(grids[r * 4:r * 4 + 4]), 1) for r in range(4)]))
  (run / 'metrics.jsonl').write_text(''.join(
      f'{{"step": {s}, "kimg": {s / 100}, "metric": "fid2k", "value": {v}}}\n'
      for s, v in ((0, 300.0), (100, 120.0), (200, 70.0))))
  app = studio.make_app(studio_render.Renderer(g, table, project_steps=3), os.fspath(run))
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  srv = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not srv.started and time.time() < deadline:
    time.sleep(0.05)
  yield g, f'http://127.0.0.1:{port}'
  srv.should_exit = True
  thread.join(timeout=10)


@pytest.fixture(scope='module')
def page(server):
  pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install -e ".[test]")')
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  _, url = server
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
    pg = browser.new_page(viewport={'width': 1280, 'height': 1000})
    pg.goto(url)
    pg.wait_for_function("document.getElementById('image').dataset.query !== undefined")
    yield pg
    browser.close()


def shown(pg) -> tuple[str, np.ndarray]:
  """(the query of the image on the page, its pixels, read back from the blob it shows)."""
  pg.wait_for_function('!busy && !pending')
  query = pg.eval_on_selector('#image', 'e => e.dataset.query')
  data = pg.evaluate("""async () => {
      const b = await (await fetch(document.getElementById('image').src)).arrayBuffer();
      return Array.from(new Uint8Array(b)); }""")
  return query, np.asarray(Image.open(io.BytesIO(bytes(data))))


def set_value(pg, selector, value, event='input'):
  pg.eval_on_selector(selector, f'(e, v) => {{ e.value = v; e.dispatchEvent(new Event("{event}")); }}',
                      str(value))


def screenshot(pg, name):
  out = os.environ.get('STUDIO_SCREENSHOTS')
  if out:
    os.makedirs(out, exist_ok=True)
    pg.screenshot(path=os.path.join(out, name), full_page=True)


def test_sliders_change_the_image_and_seeds_repeat(server, page):
  g, _ = server
  query, first = shown(page)
  np.testing.assert_array_equal(first, generate.generate_images(g, [0])[0, ..., 0])
  set_value(page, '#psi', 0.3)
  query2, second = shown(page)
  assert 'psi=0.3' in query2 and np.any(second != first)
  page.fill('#seed', '7')
  page.dispatch_event('#seed', 'change')
  _, seven = shown(page)
  assert np.any(seven != second)
  set_value(page, '#dir_pc1', 2.5)
  q, edited = shown(page)
  assert 'd.pc1=2.5' in q and np.any(edited != seven)
  page.check('#mix_on')
  q, mixed = shown(page)
  assert 'mix_seed=1' in q and np.any(mixed != edited)
  screenshot(page, 'studio.png')
  page.uncheck('#mix_on')
  set_value(page, '#dir_pc1', 0)
  set_value(page, '#psi', 0.3)
  _, again = shown(page)
  np.testing.assert_array_equal(again, seven)  # the same seed and settings: the same image
  assert page.text_content('#error') == ''


def test_run_panel(page):
  page.wait_for_selector('#curves svg[data-metric="fid2k"]')
  assert page.eval_on_selector('#sample', 'e => e.src').endswith('samples_0000200.png')
  set_value(page, '#sample_idx', 0)
  assert page.eval_on_selector('#sample', 'e => e.src').endswith('samples_0000000.png')
  page.wait_for_function("document.getElementById('sample').complete")
  assert page.eval_on_selector('#sample', 'e => e.naturalWidth') == 128


def test_upload_projects(server, page, tmp_path):
  g, _ = server
  path = tmp_path / 'target.png'
  save_png(path, generate.generate_images(g, [11])[0])
  _, before = shown(page)
  page.set_input_files('#upload', os.fspath(path))
  page.wait_for_function("document.getElementById('proj_status').textContent.startsWith('projected')",
                         timeout=120_000)
  q, projected = shown(page)
  assert 'latent=p' in q and np.any(projected != before)
  assert page.is_checked('#use_latent') and page.is_visible('#target')
  screenshot(page, 'studio_projection.png')
  page.uncheck('#use_latent')
  shown(page)


def test_error_states(page, tmp_path):
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'this is not a PNG')
  page.set_input_files('#upload', os.fspath(bad))
  page.wait_for_function("document.getElementById('error').textContent.includes('not an image')")
  # An unknown direction (e.g. a stale page after the server restarted with another file).
  page.evaluate("""() => { const s = document.getElementById('dir_pc1');
      s.dataset.name = 'gone'; s.value = 1; s.dispatchEvent(new Event('input')); }""")
  page.wait_for_function("document.getElementById('error').textContent.includes(\"unknown direction 'gone'\")")
  screenshot(page, 'studio_error.png')
  page.evaluate("""() => { const s = document.getElementById('dir_pc1');
      s.dataset.name = 'pc1'; s.value = 0; s.dispatchEvent(new Event('input')); }""")
  page.wait_for_function("document.getElementById('error').textContent === ''")
