"""gan_jax.aot: slice table, data shape without the dataset, memory/FLOPs numbers, fit verdicts.

Compiling for a TPU topology needs libtpu (the `aot` extra, installed by the README's test
command); without it these tests are skipped with that reason. The real train step's compile takes
minutes on 2 cores: the default suite compiles it once at 4x4 pixels (one variant); the tiny config
at full size with every variant is marked slow.
"""

import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_jax import aot
from gan_jax import config_base
from gan_jax import config_check
from gan_jax import train_step as train_step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _have_libtpu() -> bool:
  try:
    import libtpu  # pylint: disable=g-import-not-at-top
    return bool(libtpu.__file__)
  except ImportError:
    return False


needs_libtpu = pytest.mark.skipif(
    not _have_libtpu(), reason='libtpu missing: pip install -e ".[aot]" (jax[tpu]) to compile for '
    'TPU topologies')


@pytest.mark.parametrize('name,chips,topology,host,hbm', [
    ('v5e-4', 4, 'v5e:2x2', (2, 2, 1), 16),
    ('v5e-8', 8, 'v5e:2x4', (2, 4, 1), 16),
    ('v5litepod-16', 16, 'v5e:4x4', (2, 2, 1), 16),
    ('v5e-256', 256, 'v5e:16x16', (2, 2, 1), 16),
    ('v6e-32', 32, 'v6e:4x8', (2, 2, 1), 32),
    ('v4-8', 4, 'v4:2x2x1', (2, 2, 1), 32),
    ('v4-32', 16, 'v4:2x2x4', (2, 2, 1), 32),
    ('v4-128', 64, 'v4:4x4x4', (2, 2, 1), 32),
    ('v5p-16', 8, 'v5p:2x2x2', (2, 2, 1), 95),
    ('v5p-256', 128, 'v5p:4x4x8', (2, 2, 1), 95),
])
def test_slice_table(name, chips, topology, host, hbm):
  s = aot.parse_slice(name)
  assert (s.chips, s.topology, s.chips_per_host, s.generation.hbm_gib) == (chips, topology, host,
                                                                           hbm)
  dims = [int(d) for d in s.topology.split(':')[1].split('x')]
  assert math.prod(dims) == chips  # the topology holds exactly the slice's chips


@pytest.mark.parametrize('name,words', [
    ('v4-6', 'TensorCores'), ('v5e-12', 'power-of-two'), ('tpu-8', 'v5e-16'), ('v5p-1', 'v5p-8')])
def test_slice_errors_say_what_is_allowed(name, words):
  with pytest.raises(ValueError, match=words):
    aot.parse_slice(name)


@needs_libtpu
@pytest.mark.parametrize('name', ['v5e-8', 'v4-16', 'v5p-8', 'v6e-4'])
def test_topology_gives_one_device_per_chip(name):
  s = aot.parse_slice(name)
  devices = aot.topology_devices(s)
  assert len(devices) == s.chips and len({d.id for d in devices}) == s.chips
  assert all(d.platform == 'tpu' for d in devices)


def test_data_shape_comes_from_the_config_not_the_data(tmp_path):
  empty = str(tmp_path)  # a TFDS data_dir with nothing prepared in it
  for spec, shape in [('experiments/ffhq.py', (1024, 3, 0)),
                      ('experiments/ffhq.py:256', (256, 3, 0)),
                      ('experiments/fashion_mnist.py', (32, 1, 10))]:
    config = config_base.load(os.path.join(ROOT, spec), {'data.data_dir': empty})
    info = aot.data_info(config)
    assert (info.resolution, info.channels, info.num_classes) == shape, spec
  assert os.listdir(empty) == []  # nothing was read, prepared or downloaded
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py'), {'data.data_dir': empty})
  info = aot.data_info(config, resolution=64, channels=1, num_classes=5)
  assert (info.resolution, info.channels, info.num_classes) == (64, 1, 5)
  config.data.name = 'no_such_dataset'
  with pytest.raises(ValueError, match='--resolution'):
    aot.data_info(config)


@pytest.mark.parametrize('r1,pl,expected', [
    # R1 every 16 steps always meets path length (every 4): no R1-only variant.
    (16, 4, ['r1_pl', 'pl', 'plain']), (4, 16, ['r1_pl', 'r1', 'plain']),
    (3, 2, ['r1_pl', 'r1', 'pl', 'plain']), (4, 4, ['r1_pl', 'plain']), (1, 1, ['r1_pl']),
    (0, 4, ['pl', 'plain']), (16, 0, ['r1', 'plain']), (0, 0, ['plain'])])
def test_reachable_variants(r1, pl, expected):
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py'),
                            {'loss.r1_interval': r1, 'loss.pl_interval': pl})
  cfg = train_step_lib.StepConfig.from_config(config, 0)
  got = [aot.VARIANT_NAMES[v] for v in aot.reachable_variants(cfg)]
  assert got == expected


@pytest.fixture(scope='module')
def v5e4():
  s = aot.parse_slice('v5e-4')
  return s, Mesh(np.asarray(aot.topology_devices(s)), ('data',))


@needs_libtpu
def test_numbers_of_a_known_program(v5e4):
  """A matmul sharded over 4 chips: per-chip FLOPs, argument and output bytes in closed form."""
  _, mesh = v5e4
  m, k, n = 256, 512, 384
  rows = NamedSharding(mesh, P('data'))
  x = jax.ShapeDtypeStruct((m, k), jnp.float32, sharding=rows)
  w = jax.ShapeDtypeStruct((k, n), jnp.float32, sharding=NamedSharding(mesh, P()))
  step = jax.jit(lambda x, w, alpha, nimg, res, variant: x @ w, static_argnums=(4, 5),
                 out_shardings=rows)
  r = aot.compile_variant(step, x, w, (False, False), 16 * aot.GIB)
  assert r.fits and not r.error and r.name == 'plain'
  assert r.flops == 2 * (m // 4) * k * n  # each chip multiplies its quarter of the rows
  assert r.argument == 4 * ((m // 4) * k + k * n)  # float32 shard of x + all of w
  assert r.output == 4 * (m // 4) * n
  assert r.required == r.argument + r.output - r.alias + r.temp + r.code
  tight = aot.compile_variant(step, x, w, (False, False), r.required - 1)
  assert not tight.fits  # judged against a smaller HBM


@needs_libtpu
def test_out_of_memory_is_reported_as_not_fitting(v5e4):
  _, mesh = v5e4
  big = jax.ShapeDtypeStruct((2 ** 31,), jnp.float32, sharding=NamedSharding(mesh, P()))  # 8 GiB
  step = jax.jit(lambda x, y, alpha, nimg, res, variant: (jnp.cumsum(jnp.sin(x)), jnp.cos(x)),
                 static_argnums=(4, 5))
  r = aot.compile_variant(step, big, big, (True, True), 16 * aot.GIB)
  assert not r.fits and 'RESOURCE_EXHAUSTED' in r.error
  s, _ = v5e4
  text = aot.format_report('x.py', s, aot.pipeline.DataInfo(32, 1, 0, 0),
                           config_base.get_base_config(), 16, [r])
  assert 'DOES NOT FIT' in text and 'does NOT fit v5e-4' in text
  assert re.search(r'\d+(\.\d+)?G', text)  # the compiler's numbers are shown


def _run_cli(*args, timeout=900):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'gan_jax.aot', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_cli_refuses_bad_input_with_exit_2():
  r = _run_cli('--config', 'experiments/ffhq.py:tiny', '--topology', 'v5e-12')
  assert r.returncode == aot.EXIT_BAD_INPUT and 'power-of-two' in r.stderr


@needs_libtpu
def test_config_is_validated_for_the_slice():
  # The tiny config's batch of 8 does not split over 16 chips: refused before anything compiles.
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py:tiny'))
  info = aot.data_info(config)
  with pytest.raises(config_check.ConfigError, match=r'schedule.batch_size=8.*16 devices'):
    aot.check(config, aot.parse_slice('v5e-16'), info)
  with pytest.raises(ValueError, match='not a variant this config runs'):
    aot.check(config, aot.parse_slice('v5e-8'), info, variants='r1')  # R1 every 4 meets PL every 2


def _numbers(stdout: str) -> dict:
  return {k: float(v) for k, v in re.findall(r'^\s+(\w[\w/ ]*?)\s+(\d[\d.]*(?:e[+-]?\d+)?)(?: MiB)?',
                                             stdout, re.M)}


@needs_libtpu
def test_cli_compiles_the_real_train_step():
  """The real step (plain variant) at 4x4 pixels: numbers printed, fits; with --hbm_gib below
  what it needs: does not fit, exit 1."""
  r = _run_cli('--config', 'experiments/ffhq.py:tiny', '--topology', 'v5e-4', '--resolution', '4',
               '--variants', 'plain', '--hbm_gib', '0.001')
  assert r.returncode == aot.EXIT_DOES_NOT_FIT, r.stderr[-3000:]
  out = r.stdout
  assert 'variant plain (R1 off, path length off)' in out and 'DOES NOT FIT' in out
  nums = _numbers(out)
  for key in ('arguments', 'outputs', 'temporaries', 'generated code', 'peak', 'required',
              'FLOPs/step'):
    assert key in nums and nums[key] > 0, (key, out)
  required_gib = nums['required'] / 1024
  assert 0.001 < required_gib < 16  # so the default 16 GiB verdict would be 'fits'
  assert f'{required_gib:.3f} GiB of 0.001 GiB' in out


@needs_libtpu
def test_cli_compiles_a_growing_config_stage_by_stage():
  """ProGAN's tiny config grown to 8x8 (4 -> 8; larger stages only add compiles): one compile
  per stage, each at its batch, and the largest per-chip memory named."""
  r = _run_cli('--config', 'experiments/celebahq_progan.py:tiny', '--topology', 'v5e-4',
               '--resolution', '8', '--channels', '1', timeout=1800)
  assert r.returncode == aot.EXIT_FITS, r.stderr[-3000:]
  for res in (4, 8):
    assert f'stage {res}x{res} (batch 8), variant plain' in r.stdout
  sums = [float(x) for x in re.findall(r'^\s+required\s+([\d.]+) MiB', r.stdout, re.M)]
  assert len(sums) == 2 and len(set(sums)) == 2  # each stage its own program
  res = (4, 8)[int(np.argmax(sums))]
  top = re.search(rf'largest per-chip memory: ([\d.]+) GiB at stage {res}x{res}', r.stdout)
  assert top and abs(float(top.group(1)) - max(sums) / 1024) < 1e-3
  r = _run_cli('--config', 'experiments/celebahq_progan.py:tiny', '--topology', 'v5e-4',
               '--resolution', '32', '--channels', '1', '--max_batch', '8')
  assert r.returncode == aot.EXIT_BAD_INPUT and 'per resolution' in r.stderr


@pytest.mark.slow
@needs_libtpu
def test_cli_tiny_config_all_variants_fit():
  r = _run_cli('--config', 'experiments/ffhq.py:tiny', '--topology', 'v5e-4', '--variants', 'all',
               timeout=3600)
  assert r.returncode == aot.EXIT_FITS, r.stderr[-3000:]
  for name in ('r1_pl', 'r1', 'pl', 'plain'):
    assert f'variant {name} ' in r.stdout
  assert 'RESULT: fits v5e-4' in r.stdout


@pytest.mark.parametrize('start,limit,largest', [(2, 64, 13), (32, 64, 13), (1, 8, 8), (2, 64, 1),
                                                 (4, 64, 0), (2, 13, 13), (2, 64, 64)])
def test_max_batch_search_finds_the_largest_fit_in_few_compiles(start, limit, largest):
  tried = []

  def fits(b):
    tried.append(b)
    return b <= largest

  assert aot.search_batch(fits, start, limit) == min(largest, limit)
  assert len(tried) == len(set(tried))  # no batch compiled twice
  assert len(tried) <= 2 * math.ceil(math.log2(limit)) + 2  # doubling + bisection, not a scan


def test_max_batch_search_tries_only_batches_the_config_takes():
  tried = []
  even = lambda b: b % 2 == 0
  got = aot.search_batch(lambda b: tried.append(b) or b <= 11, 3, 64, valid=even)
  assert got == 10 and all(even(b) for b in tried)


def test_report_names_precision_remat_and_the_flops_bound():
  config = config_base.load(os.path.join(ROOT, 'experiments/ffhq.py'))
  s = aot.parse_slice('v5e-16')
  gib = aot.GIB
  reports = [aot.VariantReport('r1_pl', True, 1.0, argument=gib, temp=9 * gib, flops=4e12),
             aot.VariantReport('pl', True, 1.0, argument=gib, temp=5 * gib, flops=3e12),
             aot.VariantReport('plain', True, 1.0, argument=gib, temp=3 * gib, flops=2e12)]
  text = aot.format_report('ffhq.py', s, aot.pipeline.DataInfo(1024, 3, 0, 0), config, 16, reports)
  assert 'bfloat16 in the 4 highest resolutions' in text  # the TPU gets the bf16 model
  assert 'headroom 37.5% of the HBM' in text  # 10 GiB of 16
  # Per variant: 4e12 FLOPs at 197e12 FLOP/s for 32 images = 0.635 s/kimg.
  assert re.search(r'at peak\s+0\.635 sec/kimg', text)
  # Weighted by how often each runs (1/16, 3/16, 12/16): 2.25e12 FLOPs.
  mean = (4e12 + 3 * 3e12 + 12 * 2e12) / 16
  assert f'{mean:.4g} FLOPs/step per chip' in text
  assert f'{aot.sec_per_kimg_bound(mean, 32, 197):.3g} sec/kimg' in text
