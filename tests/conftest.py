"""Test session set-up, before any test module imports JAX.

- 8 fake CPU devices, so sharded code runs on 1 and on 8 devices.
- Fast compiles: XLA's CPU backend at optimisation level 0 (the tests' shapes are tiny, so compile
  time dominates) with its older fusion emitters (`--xla_cpu_use_fusion_emitters=false`: the tiny
  train step's four variants compiled in 126 s instead of 213 s, same load), and a persistent
  compilation cache shared by the tests of this session, so a train step that several tests build
  identically is compiled once.
"""

import logging
import os
import shutil
import tempfile

import pytest

_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  _flags += ' --xla_force_host_platform_device_count=8'
if '--xla_backend_optimization_level' not in _flags:
  _flags += ' --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
if '--xla_cpu_use_fusion_emitters' not in _flags:
  _flags += ' --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = _flags.strip()
# Made by the first process of the session (pytest-xdist's workers and the tests' subprocesses
# inherit the variable) and removed by it at the end; a cache directory of your own is kept.
_OWN_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix='gan_jax_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_CACHE
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


# The heaviest files first (compiles, subprocesses): pytest-xdist hands whole files to its two
# workers in collection order, so the light files fill the end of the run instead of one long file
# running alone.
_HEAVY_FIRST = ('test_multiprocess.py', 'test_kill_resume.py', 'test_fsdp.py', 'test_metrics.py',
                'test_train.py', 'test_progressive_train.py', 'test_projector.py', 'test_guard.py',
                'test_checkpoint_integrity.py', 'test_transfer.py', 'test_one_loop.py',
                'test_nvlabs_step.py', 'test_memory_knobs.py', 'test_stylegan3_tools.py',
                'test_main.py', 'test_augment.py', 'test_aot.py', 'test_tools_figures.py',
                'test_tools.py')


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(_HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


@pytest.fixture(autouse=True)
def _keep_absl_log_level():
  """A command's main() run in-process (prepare.main sets absl's verbosity to WARNING) must not
  silence the INFO lines that later tests of the same worker read through caplog."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  yield
  absl_logger.setLevel(level)


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
