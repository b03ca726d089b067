"""Metrics during training: `config.evals` says which and how often (in kimg).

  evals = periodic.PeriodicEvals(config, workdir, mesh, G, writer)
  ...
  # after each step: images shown so far, this step's batch, whether the run is over
  if evals.due(nimg, batch, finished):
    evals.run(state.ema_params, state.ema_buffers, step, nimg=nimg)  # fixed resolution
    # a growing G: at the stage and fade-in alpha it trains at
    evals.run(state.ema_params, state.ema_buffers, step, stage=stage, alpha=alpha, nimg=nimg)

Each run evaluates G_ema and writes every result to the clu metric writer (as `metrics/<name>`)
and, on process 0, appends one JSON object per result to `<workdir>/metrics.jsonl`:
  {"step": 3125, "kimg": 50.0, "metric": "fid2k", "value": 41.3, "seconds": 812.4,
   "num_gen": 2000, "num_real": 2000}
A run given a stage evaluates a growing G as it is then (`evaluator.growth_kwargs`: that stage
and alpha, upsampled to the full resolution, against the same full-resolution reals all run
long) and records "stage" and "alpha" in each line, and `metrics/stage`, `metrics/alpha` beside
the values in the writer.
"""

import json
import time
from typing import Optional

from absl import logging
from etils import epath

from gan_jax.metrics import evaluator as evaluator_lib
from gan_jax.metrics import registry

JSONL = 'metrics.jsonl'


class PeriodicEvals:
  """Evaluates `config.evals.metrics` every `config.evals.every_kimg` and at the run's end.

  The Inception weights are loaded and the evaluator built on the first run, so a config
  without metrics costs nothing.
  """

  def __init__(self, config, workdir, mesh, G, writer, is_main: bool = True):
    evals = config.get('evals')  # None in configs written before metrics existed
    self.specs = [] if evals is None else [s.capped(evals.max_images or None)
                                           for s in registry.parse_list(evals.metrics)]
    self.every_kimg = 0.0 if evals is None else float(evals.every_kimg)
    self.batch_size = config.schedule.batch_size
    self.config = config
    self.workdir = epath.Path(workdir)
    self.mesh, self.G, self.writer, self.is_main = mesh, G, writer, is_main
    self._evaluator = None

  @property
  def enabled(self) -> bool:
    return bool(self.specs)

  def due(self, nimg: int, batch_size: int, finished: bool) -> bool:
    """True after the step whose batch (batch_size images, which reached nimg images shown) crossed
    a multiple of every_kimg, and after the run's last step (`finished`); any schedule, batches
    that change with a growing network's stage included."""
    if not self.specs:
      return False
    if finished:
      return True
    if self.every_kimg <= 0:
      return False
    images_per_eval = self.every_kimg * 1000
    return nimg // images_per_eval > (nimg - batch_size) // images_per_eval

  def evaluator(self) -> evaluator_lib.Evaluator:
    if self._evaluator is None:
      evals = self.config.evals
      self._evaluator = evaluator_lib.Evaluator(
          self.config.data, self.mesh, batch_size=evals.batch_size,
          weights=evals.inception_weights or None, cache_dir=evals.cache_dir or None,
          seed=self.config.seed)
    return self._evaluator

  def run(self, ema_params, ema_buffers, step: int, stage: Optional[int] = None,
          alpha: Optional[float] = None, nimg: Optional[int] = None) -> dict[str, float]:
    """Evaluates every configured metric on G_ema; logs and records the results.

    stage, alpha: where a growing G is in its schedule (None: the full network); see
    `evaluator.growth_kwargs`. nimg: images shown (default step * train.batch_size), for kimg."""
    kimg = (step * self.batch_size if nimg is None else nimg) / 1000
    variables = {'params': ema_params, 'buffers': ema_buffers}
    growth = {}
    if stage is not None:
      evaluator_lib.growth_kwargs(self.G, stage, alpha)  # a bad stage fails before any work
      growth = {'stage': int(stage), 'alpha': 1.0 if alpha is None else float(alpha)}
    where = (f'  stage {growth["stage"]}  alpha {growth["alpha"]:.4f}' if growth else '')
    results = {}
    for spec in self.specs:
      start = time.time()
      values = self.evaluator().evaluate(self.G, variables, [spec], stage=stage, alpha=alpha)
      seconds = time.time() - start
      results.update(values)
      self.writer.write_scalars(step, {**{f'metrics/{k}': v for k, v in values.items()},
                                       **{f'metrics/{k}': v for k, v in growth.items()}})
      if self.is_main:
        with (self.workdir / JSONL).open('a') as f:
          for name, value in values.items():
            f.write(json.dumps({'step': step, 'kimg': kimg, 'metric': name, 'value': value,
                                'seconds': round(seconds, 3), 'num_gen': spec.num_gen,
                                'num_real': spec.num_real, **growth}) + '\n')
      logging.info('step %d  kimg %.2f%s  %s  (%.0f s)', step, kimg, where,
                   '  '.join(f'{k} {v:.4f}' for k, v in values.items()), seconds)
    self.writer.flush()
    return results
