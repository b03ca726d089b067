"""Ahead-of-time check: does a config's train step fit a TPU slice? No TPU needed.

  pip install -e ".[aot]"     # jax[tpu]: brings libtpu, the TPU compiler
  python -m gan_jax.aot --config experiments/ffhq.py --topology v5e-16
  python -m gan_jax.aot --config experiments/ffhq.py:256 --topology v4-32 --variants all
  python -m gan_jax.aot --config experiments/ffhq.py:256 --topology v5e-8 --max_batch 64
  python -m gan_jax.aot --config experiments/celebahq_progan.py --topology v5e-16   # per stage

Compiles the real train step (`train.sharded_step`: the same jit, state and batch shardings the
training loop uses) for the named slice with libtpu's compiler, on any machine, and prints per chip
the memory XLA assigned (arguments, outputs, temporaries, generated code, peak) and the FLOPs of
one step, then whether it fits the chip's HBM. The dataset need not exist: its image shape comes
from the TFDS builder's declared features (or --resolution/--channels/--num_classes). The models are
built for the 'tpu' backend, so model.num_bf16_res applies when model.bf16_backends names it.

A growing config (config.schedule.growing.grow) is compiled stage by stage, each resolution with
the batch its schedule gives it, and the report ends with the largest per-chip memory of any
stage.

--max_batch N searches the largest per-chip batch (at most N) whose heaviest variant fits: it
doubles the config's per-chip batch while that fits (halves it while it does not), then bisects
between the last fit and the first failure, one compile per attempt, each printed.

Exit status: 0 every compiled variant fits; 1 a variant does not fit (the compiler ran out of HBM,
or the total exceeds --hbm_gib); 2 bad flags or config (message on stderr).
"""

import copy
import dataclasses
import math
import os
import re
import time
from typing import Optional, Sequence

# Each JAX process on a machine with libtpu takes libtpu's lock file; compiling for a TPU topology
# needs no TPU, so do not let another process's lock stop it.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from gan_jax import cli_errors  # pylint: disable=wrong-import-position
from gan_jax import config_base  # pylint: disable=wrong-import-position
from gan_jax import config_check  # pylint: disable=wrong-import-position
from gan_jax import models  # pylint: disable=wrong-import-position
from gan_jax import platforms  # pylint: disable=wrong-import-position
from gan_jax import sharding  # pylint: disable=wrong-import-position
from gan_jax import schedule as schedule_lib  # pylint: disable=wrong-import-position
from gan_jax import train  # pylint: disable=wrong-import-position
from gan_jax import train_step  # pylint: disable=wrong-import-position
from gan_jax.data import pipeline  # pylint: disable=wrong-import-position
from gan_jax.models import conv  # pylint: disable=wrong-import-position

GIB = 2 ** 30
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_BAD_INPUT = 0, 1, cli_errors.EXIT_USER_ERROR


@dataclasses.dataclass(frozen=True)
class Generation:
  """A TPU generation: how its slice names count, its topology shape and HBM per chip."""
  prefix: str  # libtpu's topology prefix: 'v5e' -> 'v5e:4x4'
  hbm_gib: float  # HBM per chip (one JAX device)
  cores_per_name_unit: int  # v4-32 counts TensorCores (2 per chip): 16 chips; v5e-16: 16 chips
  dims: int  # 2-D (v5e, v6e) or 3-D torus (v4, v5p)
  chip_config: str  # 'megacore': one JAX device per chip, as on Cloud TPU VMs
  peak_tflops: float  # peak bfloat16 TFLOP/s per chip


# HBM and peak bf16 compute per chip from Cloud TPU's system-architecture pages (v4 32 GiB,
# 275 TFLOP/s; v5e 16 GiB, 197; v5p 95 GiB, 459; v6e Trillium 32 GiB, 918).
GENERATIONS = {
    'v4': Generation('v4', 32, 2, 3, 'megacore', 275),
    'v5p': Generation('v5p', 95, 2, 3, 'megacore', 459),
    'v5e': Generation('v5e', 16, 1, 2, 'default', 197),
    'v5litepod': Generation('v5e', 16, 1, 2, 'default', 197),
    'v6e': Generation('v6e', 32, 1, 2, 'default', 918),
}


def sec_per_kimg_bound(flops_per_chip: float, global_batch: int, peak_tflops: float) -> float:
  """A lower bound on seconds per 1000 images: the step's FLOPs on one chip at the chip's peak
  bf16 rate (no step reaches it: float32 layers, memory-bound ops and communication are slower)."""
  return flops_per_chip / (peak_tflops * 1e12) * 1000 / global_batch

# Reachable (do_r1, do_pl) flags of the train step, heaviest first.
VARIANT_NAMES = train_step.VARIANT_NAMES


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str  # as given: 'v5e-16'
  generation: Generation
  chips: int
  topology: str  # libtpu topology: 'v5e:4x4'
  chips_per_host: tuple  # host bounds, (x, y, z)


def _grid(chips: int, dims: int) -> tuple:
  """Cloud TPU slice shapes: 2-D 4 -> 2x2, 8 -> 2x4, 16 -> 4x4, ...; 3-D 4 -> 2x2x1,
  8 -> 2x2x2, 16 -> 2x2x4, 32 -> 2x4x4, 64 -> 4x4x4, ..."""
  if dims == 2:
    if chips == 1:
      return (1, 1)
    e = int(math.log2(chips))
    return (2 ** (e // 2), 2 ** (e - e // 2))
  if chips < 8:
    return (2, 2, 1) if chips == 4 else (1, 1, 1) if chips == 1 else (1, 2, 1)
  e = int(math.log2(chips))
  return tuple(sorted((2 ** (e // 3 + (i < e % 3)) for i in range(3))))


def parse_slice(name: str) -> Slice:
  """'v5e-16' / 'v5litepod-16' / 'v4-32' / 'v5p-128' / 'v6e-8' -> Slice (chips and topology)."""
  m = re.fullmatch(r'(v4|v5p|v5e|v5litepod|v6e)-(\d+)', name.strip())
  if not m:
    raise ValueError(f'--topology={name!r}: expected a Cloud TPU accelerator type such as v5e-16, '
                     f'v5litepod-16, v6e-8, v4-32 or v5p-128 (generations: {sorted(GENERATIONS)}).')
  gen = GENERATIONS[m.group(1)]
  count = int(m.group(2))
  chips = count // gen.cores_per_name_unit
  if count % gen.cores_per_name_unit or chips < 1 or chips & (chips - 1):
    unit = 'TensorCores (2 per chip)' if gen.cores_per_name_unit == 2 else 'chips'
    raise ValueError(f'--topology={name!r}: {m.group(1)} names count {unit}; this tool knows '
                     f'power-of-two slices, e.g. {m.group(1)}-{4 * gen.cores_per_name_unit} or '
                     f'{m.group(1)}-{16 * gen.cores_per_name_unit}.')
  shape = _grid(chips, gen.dims)
  if gen.dims == 2:
    # v5e/v6e hosts hold 4 chips (2x2); the 8-chip slice is one 8-chip host (2x4).
    host = (shape[0], shape[1], 1) if chips <= 8 else (2, 2, 1)
  else:
    host = (min(shape[0], 2), min(shape[1], 2), 1)  # v4/v5p: 4 chips per host
  return Slice(name, gen, chips, f'{gen.prefix}:' + 'x'.join(map(str, shape)), host)


def topology_devices(tpu_slice: Slice) -> Sequence[jax.Device]:
  """Abstract devices of the slice (compile-only: nothing runs on them)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if not platforms.tpu_present():
    # Without a TPU, libtpu reads the slice it runs on from these variables and prints an error
    # for each one missing (gan_jax/platforms.py). This process compiles for `tpu_slice` and is
    # its only worker. (Read once, when libtpu starts; the topology itself is given below.)
    os.environ.setdefault('TPU_ACCELERATOR_TYPE', tpu_slice.name)
    os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  try:
    desc = topologies.get_topology_desc(
        platform='tpu', topology_name=tpu_slice.topology,
        chip_config_name=tpu_slice.generation.chip_config,
        chips_per_host_bounds=tpu_slice.chips_per_host, num_slices=1)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f'Could not describe TPU topology {tpu_slice.topology}: {e}\nThe AOT check '
                       f'needs libtpu: pip install -e ".[aot]" (jax[tpu] of the installed jax '
                       f'version).') from e
  devices = list(desc.devices)
  if len(devices) != tpu_slice.chips:
    raise RuntimeError(f'{tpu_slice.topology} gave {len(devices)} devices, expected '
                       f'{tpu_slice.chips} (one per chip).')
  return devices


def data_info(config, resolution: Optional[int] = None, channels: Optional[int] = None,
              num_classes: Optional[int] = None) -> pipeline.DataInfo:
  """The dataset's image shape and classes from its TFDS builder's declared features (nothing is
  read or prepared); each given argument overrides."""
  if resolution is None or channels is None or num_classes is None:
    name = config.data.name
    if name not in pipeline.DATASETS:
      raise ValueError(f'config.data.name={name!r} is not in gan_jax.data.pipeline.DATASETS; '
                       f'give --resolution, --channels and --num_classes instead.')
    entry = pipeline.DATASETS[name]
    try:
      builder = entry.builder_cls(data_dir=config.data.get('data_dir'),
                                  **entry.builder_kwargs(config.data))
      features = builder.info.features
      height, _, declared_channels = features['image'].shape
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'Could not read the image shape that dataset {name!r} declares ({e}); '
                       f'give --resolution, --channels and --num_classes instead.') from e
    declared_classes = features['label'].num_classes if 'label' in features else 0
    resolution = height if resolution is None else resolution
    channels = declared_channels if channels is None else channels
    num_classes = declared_classes if num_classes is None else num_classes
  if resolution is None or channels is None:
    raise ValueError(f'Dataset {config.data.name!r} declares no fixed image shape; give '
                     f'--resolution and --channels.')
  return pipeline.DataInfo(int(resolution), int(channels), int(num_classes), num_examples=0)


def reachable_variants(step_cfg) -> list:
  """(do_r1, do_pl) flags the StyleGAN2 loop can call, heaviest first."""
  return list(step_cfg.reachable())


def variant_weights(step_cfg) -> dict:
  """{variant name: fraction of the steps that run it}, over one period of the intervals."""
  period = math.lcm(max(step_cfg.r1_interval, 1), max(step_cfg.pl_interval, 1))
  counts = {}
  for s in range(period):
    name = VARIANT_NAMES[step_cfg.regularize(s)]
    counts[name] = counts.get(name, 0) + 1
  return {k: v / period for k, v in counts.items()}


@dataclasses.dataclass
class VariantReport:
  """Per-chip numbers of one compiled variant (bytes; FLOPs of one step on one chip)."""
  name: str
  fits: bool
  compile_sec: float
  resolution: int = 0  # the stage's image size
  batch: int = 0  # the stage's global batch
  argument: int = 0
  output: int = 0
  alias: int = 0
  temp: int = 0
  code: int = 0
  peak: int = 0
  flops: float = 0.0
  error: str = ''  # the compiler's out-of-memory message when it did not fit

  @property
  def total(self) -> int:
    """Sum of the parts: arguments + outputs - donated (aliased) + temporaries + code."""
    return self.argument + self.output - self.alias + self.temp + self.code

  @property
  def required(self) -> int:
    """HBM the step needs on a chip, judged conservatively: the sum of the parts (XLA allocates
    the temporaries as one block next to the arguments, outputs and code)."""
    return self.total


def compile_variant(step_fn, abstract, batch, variant: tuple, hbm_bytes: int,
                    resolution: int = 0, name: Optional[str] = None,
                    global_batch: int = 0) -> VariantReport:
  """Compiles `step_fn(abstract, batch, alpha, nimg, resolution, variant)` (the loop's call, the
  last two static) for the TPU and reads its memory and FLOPs."""
  name = name or VARIANT_NAMES[variant]
  where = dict(resolution=resolution, batch=global_batch)
  t0 = time.time()
  try:
    with conv.target_platform('tpu'):  # XLA's own conv gradients, not the CPU ones
      # alpha 0.5: the fade-in's blend is compiled in whatever alpha is (it is traced).
      lowered = step_fn.lower(abstract, batch, jnp.float32(0.5), jnp.int32(0), resolution,
                              variant)
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'Ran out of memory' not in str(e):
      raise
    return VariantReport(name, False, time.time() - t0, error=str(e).strip(), **where)
  sec = time.time() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report = VariantReport(
      name, True, sec, **where, argument=mem.argument_size_in_bytes, output=mem.output_size_in_bytes,
      alias=mem.alias_size_in_bytes, temp=mem.temp_size_in_bytes,
      code=mem.generated_code_size_in_bytes, peak=getattr(mem, 'peak_memory_in_bytes', 0),
      flops=float((cost or {}).get('flops', 0.0)))
  report.fits = report.required <= hbm_bytes
  return report


def check(config, tpu_slice: Slice, info: pipeline.DataInfo, variants: str = 'heaviest',
          hbm_gib: Optional[float] = None, min_headroom: float = 0.0) -> list:
  """Compiles the config's train step for the slice; a VariantReport per variant. A variant fits
  when it needs at most (1 - min_headroom) of the HBM."""
  devices = topology_devices(tpu_slice)
  mesh = sharding.make_mesh(config.mesh, devices)
  config_check.validate(config, mesh.size)
  config_check.validate_resolution(info.resolution)
  if config.schedule.growing.grow:
    config_check.validate_progressive_resolution(config, info.resolution)
  G, D, c_dim = train.build(config, info, backend='tpu')  # bf16 as on the TPU
  abstract, _, batch_shard, step_def, step_fn = train.sharded_step(config, mesh, G, D, c_dim)
  reachable = list(step_def.reachable)
  by_name = {step_def.variant_names(v): v for v in reachable}
  if variants == 'heaviest':
    chosen = reachable[:1]
  elif variants == 'all':
    chosen = reachable
  else:
    chosen = []
    for name in variants.split(','):
      if name not in by_name:
        raise ValueError(f'--variants: {name!r} is not a variant this config runs; it runs '
                         f'{sorted(by_name)} (or say heaviest / all).')
      chosen.append(by_name[name])
  hbm = (tpu_slice.generation.hbm_gib if hbm_gib is None else hbm_gib) * GIB
  # Every stage of the schedule (one for a fixed-resolution config), with its batch.
  stages = schedule_lib.Schedule(config, info.resolution).batch_sizes()
  reports = []
  for resolution, n in sorted(stages.items()):
    batch = {
        'image': jax.ShapeDtypeStruct((n, resolution, resolution, info.channels), jnp.float32,
                                      sharding=batch_shard),
        'label': jax.ShapeDtypeStruct((n,), jnp.int32, sharding=batch_shard),
    }
    for v in chosen:
      r = compile_variant(step_fn, abstract, batch, v, int(hbm * (1 - min_headroom)), resolution,
                          step_def.variant_names(v), n)
      reports.append(r)
      logging.info('compiled %s at %dx%d (batch %d) in %.0fs: %s', r.name, resolution,
                   resolution, n, r.compile_sec, 'out of memory' if r.error else
                   f'{r.required / GIB:.3f} GiB, {r.flops:.4g} FLOPs')
  return reports


def _with_batch(config, per_chip: int, chips: int):
  config = copy.deepcopy(config)
  config.schedule.batch_size = per_chip * chips
  return config


def search_batch(fits, start: int, limit: int, valid=lambda b: True) -> int:
  """The largest batch b <= limit with fits(b), assuming fits is monotone (0 if even the
  smallest valid batch does not fit). Doubling from `start` while it fits (halving while it does
  not), then bisection between the last fit and the first failure; only batches with valid(b)
  are tried, each once."""
  lo, hi = 0, limit + 1  # the largest batch known to fit, the smallest known not to
  b = next((c for c in range(min(max(start, 1), limit), 0, -1) if valid(c)), None)
  if b is None:
    return 0
  if fits(b):
    lo = b
    while lo < limit:  # doubling
      b = next((c for c in range(min(2 * lo, limit), lo, -1) if valid(c)), None)
      if b is None:
        break
      if not fits(b):
        hi = b
        break
      lo = b
  else:
    hi = b
    while hi > 1:  # halving
      b = next((c for c in range(hi // 2, 0, -1) if valid(c)), None)
      if b is None:
        break
      if fits(b):
        lo = b
        break
      hi = b
  if lo == 0:
    return 0
  while True:  # bisection over the batches between lo and hi the config can take
    between = [c for c in range(lo + 1, min(hi, limit + 1)) if valid(c)]
    if not between:
      return lo
    b = between[len(between) // 2]
    if fits(b):
      lo = b
    else:
      hi = b


def max_batch(config, tpu_slice: Slice, info: pipeline.DataInfo, limit: int,
              hbm_gib: Optional[float] = None, min_headroom: float = 0.0, log=print):
  """(largest per-chip batch <= limit whose heaviest variant fits or 0, {batch: VariantReport}):
  `search_batch` from the config's per-chip batch, one compile per attempt, each logged. Batches
  the config cannot take (minibatch-std groups that do not divide the global batch) are
  skipped."""
  if config.schedule.growing.grow:
    raise ValueError('--max_batch searches the batch of a fixed-resolution config; a growing '
                     'config names its batch per resolution (config.schedule.growing.batch_sizes): '
                     'check it without --max_batch to see every stage')
  chips = tpu_slice.chips
  tried = {}

  def valid(b):
    try:
      config_check.validate(_with_batch(config, b, chips), chips)
      return True
    except config_check.ConfigError:
      return False

  def fits(b):
    t0 = time.time()
    (r,) = check(_with_batch(config, b, chips), tpu_slice, info, 'heaviest', hbm_gib,
                 min_headroom)
    tried[b] = r
    need = f'{r.required / GIB:.3f} GiB' if not r.error else 'the compiler ran out of memory'
    log(f'max_batch attempt {len(tried)}: {b} per chip (global {b * chips}), {r.name}: '
        f'{"fits" if r.fits else "does not fit"} ({need}; compiled in {time.time() - t0:.0f}s)')
    return r.fits

  best = search_batch(fits, config.schedule.batch_size // chips, limit, valid)
  return best, tried


def _mib(x: float) -> str:
  return f'{x / 2 ** 20:10.1f} MiB'


def _variant_text(name: str) -> str:
  if name in VARIANT_NAMES.values():  # StyleGAN2's (do_r1, do_pl)
    do_r1, do_pl = next(v for v, n in VARIANT_NAMES.items() if n == name)
    return f'{name} (R1 {"on" if do_r1 else "off"}, path length {"on" if do_pl else "off"})'
  return name


def format_report(config_name: str, tpu_slice: Slice, info, config, hbm_gib: float,
                  reports: Sequence[VariantReport]) -> str:
  peak = tpu_slice.generation.peak_tflops
  growing = len({r.resolution for r in reports}) > 1
  if growing:
    batches = ', '.join(f'{r.resolution}:{r.batch}' for r in reports
                        if r is next(q for q in reports if q.resolution == r.resolution))
    batch_text = f'growing, global batch per resolution {batches}'
  else:
    n = config.schedule.batch_size
    batch_text = f'global batch {n} ({n // tpu_slice.chips} per chip)'
  lines = [f'{config_name} on {tpu_slice.name}: {tpu_slice.chips} chips ({tpu_slice.topology}), '
           f'{hbm_gib:g} GiB HBM per chip; {info.resolution}x{info.resolution}x{info.channels} '
           f'images, {batch_text}; bfloat16 in the '
           f'{models.bf16_resolutions(config.model, "tpu")} highest resolutions, remat '
           f'{config.train.remat}.']
  for r in reports:
    stage = f'stage {r.resolution}x{r.resolution} (batch {r.batch}), ' if growing else ''
    lines.append(f'{stage}variant {_variant_text(r.name)}, compiler ran {r.compile_sec:.0f}s; '
                 'per chip:')
    n = r.batch or config.schedule.batch_size
    if not r.error:
      lines += [f'  arguments      {_mib(r.argument)}', f'  outputs        {_mib(r.output)}',
                f'  aliased        {_mib(r.alias)}  (donated state: in both of the above)',
                f'  temporaries    {_mib(r.temp)}', f'  generated code {_mib(r.code)}',
                f'  sum            {_mib(r.total)}  (arguments + outputs - aliased + temporaries '
                f'+ code)',
                f'  peak           {_mib(r.peak)}  (XLA\'s peak of live buffers)',
                f'  required       {_mib(r.required)}  (the sum: judged against the HBM)',
                f'  FLOPs/step     {r.flops:.4g}',
                f'  at peak        {sec_per_kimg_bound(r.flops, n, peak):10.3g} sec/kimg  (every '
                f'step this variant at the {peak:g} TFLOP/s bf16 peak: a lower bound)',
                f'  -> {"fits" if r.fits else "DOES NOT FIT"}: {r.required / GIB:.3f} GiB of '
                f'{hbm_gib:g} GiB per chip, headroom '
                f'{100 * (1 - r.required / (hbm_gib * GIB)):.1f}% of the HBM']
    else:
      first = ' '.join(r.error.split())[:600]
      lines += [f'  -> DOES NOT FIT: the compiler ran out of the {hbm_gib:g} GiB per chip:',
                f'     {first}']
  weights = variant_weights(train_step.StepConfig.from_config(config, 0))
  if (not growing and {r.name for r in reports} == set(weights)
      and all(not r.error for r in reports)):
    n = config.schedule.batch_size
    flops = sum(weights[r.name] * r.flops for r in reports)
    lines.append(f'mean over the variants\' steps: {flops:.4g} FLOPs/step per chip; at the '
                 f'{peak:g} TFLOP/s bf16 peak {sec_per_kimg_bound(flops, n, peak):.3g} sec/kimg '
                 f'(a lower bound)')
  verdict = all(r.fits for r in reports)
  if growing and all(not r.error for r in reports):
    top = max(reports, key=lambda r: r.required)
    lines.append(f'largest per-chip memory: {top.required / GIB:.3f} GiB at stage '
                 f'{top.resolution}x{top.resolution} (batch {top.batch}), variant {top.name}')
  lines.append(f'RESULT: {"fits" if verdict else "does NOT fit"} {tpu_slice.name} '
               f'({", ".join(r.name for r in reports)}).')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so importing this module
  (tests, notebooks) does not clash with gan_jax.main's --config."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config, e.g. experiments/ffhq.py:256; --config.KEY=VALUE '
      'overrides as in gan_jax.main.', lock_config=True)
  flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type: v5e-16 (= v5litepod-16), '
                      'v6e-8, v4-32 (TensorCores: 16 chips), v5p-128, ...')
  flags.DEFINE_string('variants', 'heaviest', "Train-step variants to compile: 'heaviest' (R1 "
                      "and path length, as at step 0), 'all' the config reaches, or a list of "
                      'r1_pl,r1,pl,plain.')
  flags.DEFINE_float('hbm_gib', None, "HBM per chip to judge against (default: the chip's).")
  flags.DEFINE_integer('resolution', None, "Image size, instead of the dataset's declared one.")
  flags.DEFINE_integer('channels', None, "Image channels, instead of the dataset's.")
  flags.DEFINE_integer('num_classes', None, "Label classes, instead of the dataset's.")
  flags.DEFINE_float('min_headroom', 0.0, 'A variant fits only if it leaves this fraction of '
                     'the HBM free (0.1: needs at most 90%).')
  flags.DEFINE_integer('max_batch', 0, 'Search the largest per-chip batch, at most this, whose '
                       'heaviest variant fits (0: only check the config as it is).')
  flags.mark_flags_as_required(['config', 'topology'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # A TPU executable compiled without a TPU client cannot be read back from the persistent cache.
  jax.config.update('jax_enable_compilation_cache', False)
  config = cli_errors.config_flag('config')
  config_base.migrate(config, config_flags.get_override_values(FLAGS['config']))
  try:
    tpu_slice = parse_slice(FLAGS.topology)
    info = data_info(config, FLAGS.resolution, FLAGS.channels, FLAGS.num_classes)
    hbm_gib = tpu_slice.generation.hbm_gib if FLAGS.hbm_gib is None else FLAGS.hbm_gib
    if hbm_gib <= 0:
      raise ValueError(f'--hbm_gib={FLAGS.hbm_gib} must be positive.')
    if not 0 <= FLAGS.min_headroom < 1:
      raise ValueError(f'--min_headroom={FLAGS.min_headroom} must be in [0, 1).')
    if FLAGS.max_batch < 0:
      raise ValueError(f'--max_batch={FLAGS.max_batch} must be 0 (off) or a batch per chip.')
    if FLAGS.max_batch:
      best, tried = max_batch(config, tpu_slice, info, FLAGS.max_batch, hbm_gib,
                              FLAGS.min_headroom, log=lambda m: print(m, flush=True))
      if not best:
        print(f'RESULT: no per-chip batch fits {tpu_slice.name} ({len(tried)} compiles).')
        return EXIT_DOES_NOT_FIT
      r = tried[best]
      print(f'RESULT: max per-chip batch {best} (global {best * tpu_slice.chips}) on '
            f'{tpu_slice.name}, {r.name}: {r.required / GIB:.3f} GiB of {hbm_gib:g} GiB, '
            f'{r.flops:.4g} FLOPs/step per chip ({len(tried)} compiles).', flush=True)
      return EXIT_FITS
    reports = check(config, tpu_slice, info, FLAGS.variants, hbm_gib, FLAGS.min_headroom)
  except (ValueError, RuntimeError) as e:  # bad flags or config (ConfigError is a ValueError)
    raise cli_errors.UserError(str(e)) from e  # one line, exit EXIT_BAD_INPUT
  config_name = config_flags.get_config_filename(FLAGS['config'])
  print(format_report(config_name, tpu_slice, info, config, hbm_gib, reports), flush=True)
  return EXIT_FITS if all(r.fits for r in reports) else EXIT_DOES_NOT_FIT


if __name__ == '__main__':
  define_flags()
  cli_errors.run(main, absl_flags=True)
