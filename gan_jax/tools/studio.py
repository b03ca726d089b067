"""A visual studio in the browser: explore, mix, edit and project with a trained generator, and
look at its training run.

  python -m gan_jax.tools.studio runs/fmnist [--port 8000] [--directions dirs.npz]
  python -m gan_jax.tools.studio exports/ffhq --host 0.0.0.0    # listen beyond this machine
  ssh -L 8000:127.0.0.1:8000 tpu-vm   # then open http://127.0.0.1:8000 on the laptop

PATH is anything `gan_jax.load_generator` takes: a training workdir, an export or NVIDIA weights.
One page (gan_jax/tools/studio_static/index.html, plain HTML/JS, nothing fetched from the
internet) with: seed or z, truncation ψ, class, noise mode; style mixing (a second seed and the
ws it replaces); StyleGAN3 translate / rotate; a strength slider per direction of --directions
(`gan_jax.tools.directions`); an upload that projects an image (`gan_jax.tools.projector`, pixel
distance, --project-steps steps) and then edits the projection; and, when PATH is a workdir, its
sample grids over training (samples_*.png) and its metric curves (metrics.jsonl and the scalars
of the TensorBoard event files, drawn as SVG).

The server is a Starlette ASGI app run by uvicorn (one process; the synchronous endpoints run in
its thread pool, so several clients are served at once). Rendering: `gan_jax.tools.studio_render`
(the generator stays jitted; a slider change recompiles nothing). It listens on 127.0.0.1 unless
--host says otherwise. Uploads are held in memory and never written to disk; the only files it
reads after start are the workdir's own sample grids, by names it listed itself, resolved and
checked to lie inside the workdir.

API (what the page uses; all JSON errors are {"error": message} with status 400 or 404):
  GET  /api/info                       the generator's sizes, its directions, whether a run is shown
  GET  /api/render?seed=&psi=&...      image/png (parameters: see `settings_from_query`)
  POST /api/project (multipart 'file') {"latent": id, "target": data URL}; render with latent=id
  GET  /api/run                        {"samples": [names], "metrics": {name: [[step, value]...]}}
  GET  /api/run/image/NAME             one of the listed sample grids (image/png)
"""

import argparse
import base64
import json
import os
import re
from typing import Optional, Sequence

from absl import logging
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gan_jax import cli_errors
from gan_jax.tools import studio_render

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'studio_static')
SAMPLE_NAME = re.compile(r'^samples_\d+\.png$')  # the grids train.py writes as it goes
MAX_UPLOAD = 20 << 20  # bytes


class RunFiles:
  """A training workdir's sample grids and metric series (read-only, inside the workdir)."""

  def __init__(self, workdir: str):
    self.root = os.path.realpath(workdir)

  def samples(self) -> list[str]:
    return sorted(n for n in os.listdir(self.root) if SAMPLE_NAME.match(n))

  def image_path(self, name: str) -> str:
    """The path of a listed sample grid; refuses any other name or a path leaving the root."""
    if not SAMPLE_NAME.match(name) or name not in self.samples():
      raise FileNotFoundError(f'no sample grid {name!r} in the workdir')
    path = os.path.realpath(os.path.join(self.root, name))
    if os.path.dirname(path) != self.root:
      raise PermissionError(f'{name!r} lies outside the workdir')
    return path

  def metrics(self) -> dict:
    """{name: [[step, value], ...]} from metrics.jsonl and the event files' scalars."""
    series = {}
    jsonl = os.path.join(self.root, 'metrics.jsonl')
    if os.path.exists(jsonl):
      with open(jsonl) as f:
        for line in f:
          try:
            row = json.loads(line)
            series.setdefault(str(row['metric']), []).append([int(row['step']),
                                                               float(row['value'])])
          except (ValueError, KeyError, TypeError):
            continue  # a half-written last line
    if any(n.startswith('events.out.tfevents') for n in os.listdir(self.root)):
      for name, points in _event_scalars(self.root).items():
        series.setdefault(name, points)
    return {k: sorted(v) for k, v in series.items()}


def _event_scalars(root: str) -> dict:
  """The scalar series of the TensorBoard event files in root (clu writes them as tensors)."""
  from tensorboard.backend.event_processing import event_accumulator as ea  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  acc = ea.EventAccumulator(root, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0, ea.IMAGES: 1})
  acc.Reload()
  tags = acc.Tags()
  series = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags.get('scalars', [])}
  for tag in tags.get('tensors', []):
    events = acc.Tensors(tag)
    values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
    if values and all(v.shape == () and v.dtype.kind in 'fiu' for v in values):
      series[tag] = [[e.step, float(v)] for e, v in zip(events, values)]
  return series


def settings_from_query(q) -> studio_render.Settings:
  """Settings from the query string: seed, z (comma list), latent, psi, class, noise, mix_seed,
  mix_layers, d.NAME=strength (one per direction), tx, ty, rotate."""
  try:
    return studio_render.Settings(
        seed=int(q.get('seed', 0)),
        z=[float(v) for v in q['z'].split(',')] if q.get('z') else None,
        latent=q.get('latent', ''),
        psi=float(q.get('psi', 1.0)),
        class_idx=int(q['class']) if q.get('class', '') != '' else None,
        noise=q.get('noise', 'const'),
        mix_seed=int(q['mix_seed']) if q.get('mix_seed', '') != '' else None,
        mix_layers=q.get('mix_layers', 'coarse'),
        strengths={k[2:]: float(v) for k, v in q.items() if k.startswith('d.')},
        translate=(float(q.get('tx', 0)), float(q.get('ty', 0))),
        rotate=float(q.get('rotate', 0)))
  except ValueError as e:
    raise cli_errors.UserError(f'bad parameter: {e}') from None


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({'error': message}, status_code=status)


def make_app(renderer: studio_render.Renderer, workdir: Optional[str] = None) -> Starlette:
  """The ASGI app for one renderer (and the workdir whose run it shows, if any)."""
  run = RunFiles(workdir) if workdir else None
  with open(os.path.join(STATIC, 'index.html')) as f:
    page = f.read()

  async def index(request: Request):
    del request
    return HTMLResponse(page)

  async def info(request: Request):
    del request
    return JSONResponse(dict(renderer.info(), run=run is not None))

  def render_png(query) -> Response:
    try:
      image = renderer.render(settings_from_query(query))
    except cli_errors.UserError as e:
      return _error(400, str(e))
    return Response(studio_render.png_bytes(image), media_type='image/png',
                    headers={'Cache-Control': 'no-store'})

  async def render(request: Request):
    return await run_in_threadpool(render_png, dict(request.query_params))

  async def project(request: Request):
    if int(request.headers.get('content-length', 0)) > MAX_UPLOAD:
      return _error(400, f'the upload is larger than {MAX_UPLOAD >> 20} MiB')
    form = await request.form()
    upload = form.get('file')
    if upload is None or isinstance(upload, str):
      return _error(400, 'no file in the upload (a multipart form field named "file")')
    data = await upload.read()
    try:
      latent, target = await run_in_threadpool(renderer.project, data)
    except cli_errors.UserError as e:
      return _error(400, str(e))
    url = 'data:image/png;base64,' + base64.b64encode(studio_render.png_bytes(target)).decode()
    return JSONResponse({'latent': latent, 'target': url})

  async def run_info(request: Request):
    del request
    if run is None:
      return _error(404, 'PATH is not a training workdir: no run to show')
    metrics = await run_in_threadpool(run.metrics)
    return JSONResponse({'samples': run.samples(), 'metrics': metrics})

  async def run_image(request: Request):
    if run is None:
      return _error(404, 'PATH is not a training workdir: no run to show')
    try:
      return FileResponse(run.image_path(request.path_params['name']), media_type='image/png')
    except (FileNotFoundError, PermissionError) as e:
      return _error(404, str(e))

  return Starlette(routes=[
      Route('/', index), Route('/api/info', info), Route('/api/render', render),
      Route('/api/project', project, methods=['POST']), Route('/api/run', run_info),
      Route('/api/run/image/{name}', run_image)])


def build(path: str, directions: Optional[str] = None, project_steps: int = 100,
          step: Optional[int] = None) -> Starlette:
  """Loads the generator (and directions) at `path` and returns the app."""
  from gan_jax.tools import directions as directions_lib  # pylint: disable=g-import-not-at-top
  from gan_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from gan_jax.tools import loading  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  g = loading.load_generator(path, step=step)
  table = directions_lib.load(directions) if directions else None
  renderer = studio_render.Renderer(g, table, project_steps=project_steps)
  workdir, _ = checkpointing.workdir_and_step(epath.Path(os.path.abspath(path)))
  renderer.render(studio_render.Settings())  # compile before the first client waits
  return make_app(renderer, os.fspath(workdir) if workdir else None)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.studio',
                                   description='Serve the generator studio page.')
  parser.add_argument('path', help='training workdir, export directory or NVIDIA weights')
  parser.add_argument('--step', type=int, default=None, help='with a workdir: checkpoint step')
  parser.add_argument('--directions', default=None, help='directions .npz (tools.directions)')
  parser.add_argument('--project-steps', type=int, default=100,
                      help='projector steps per uploaded image (default 100)')
  parser.add_argument('--host', default='127.0.0.1', help='default 127.0.0.1 (this machine only)')
  parser.add_argument('--port', type=int, default=8000)
  args = parser.parse_args(argv)
  import uvicorn  # pylint: disable=g-import-not-at-top
  app = build(args.path, args.directions, args.project_steps, args.step)
  logging.info('studio on http://%s:%d', args.host, args.port)
  print(f'studio: http://{args.host}:{args.port}', flush=True)
  uvicorn.run(app, host=args.host, port=args.port, log_level='warning')


if __name__ == '__main__':
  cli_errors.run(main)
