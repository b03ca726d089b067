"""Entry point: python -m gan_jax.main --config experiments/FILE.py[:VARIANT] --workdir DIR.

Any config value can be overridden on the command line, e.g. --config.schedule.kimg=10 (the keys
renamed in issue 17 still work for one release, with a warning: gan_jax/config_compat.py).
Running the same command again resumes from the workdir's latest checkpoint. A user error (bad
flag, config value or file) ends in one line, exit status 2; --verbose_errors or
GAN_JAX_VERBOSE_ERRORS=1 shows its traceback.
"""

import logging as std_logging
import os

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gan_jax import cli_errors
from gan_jax import config_base

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory (local or gs://) for checkpoints, logs, samples.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                'experiments/fashion_mnist.py or experiments/ffhq.py:tiny.',
                                lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with auto-detection '
                  '(multi-process runs: Cloud TPU pods, SLURM, or the JAX_COORDINATOR_ADDRESS '
                  'environment variable plus --num_processes / --process_id).')
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0: start one process of a '
                    'multi-process run by hand (with --num_processes and --process_id).')
flags.DEFINE_integer('num_processes', None, 'Processes in the multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index, 0 .. num_processes - 1.')
flags.DEFINE_string('compilation_cache',
                    os.environ.get('JAX_COMPILATION_CACHE_DIR',
                                   os.path.expanduser('~/.cache/gan_jax/xla')),
                    'Persistent XLA compilation cache ("" to disable): a restarted or resumed run '
                    'skips recompiling its train step.')
flags.mark_flags_as_required(['config', 'workdir'])


class _DropLibraryChatter(std_logging.Filter):
  """Orbax logs every step of every save at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def initialize_distributed(auto: bool, coordinator_address, num_processes, process_id) -> bool:
  """jax.distributed.initialize() from explicit flags, else auto-detected (--distributed), else
  nothing (a single process; returns False). Must run before anything touches a device."""
  explicit = (coordinator_address, num_processes, process_id)
  if all(v is None for v in explicit):
    if auto:
      jax.distributed.initialize()
    return auto
  if coordinator_address is None and not auto:
    raise app.UsageError('--num_processes / --process_id need --coordinator_address=HOST:PORT '
                         '(or --distributed with JAX_COORDINATOR_ADDRESS set).')
  if num_processes is None or process_id is None:
    raise app.UsageError('A hand-started multi-process run needs all of --coordinator_address, '
                         '--num_processes and --process_id.')
  if not 0 <= process_id < num_processes:
    raise app.UsageError(f'--process_id={process_id} must be in 0 .. --num_processes - 1 '
                         f'({num_processes - 1}).')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = cli_errors.config_flag('config')  # a missing config file: one line, before JAX starts
  config_base.migrate(config, config_flags.get_override_values(FLAGS['config']))
  std_logging.getLogger().addFilter(_DropLibraryChatter())
  for handler in std_logging.getLogger().handlers:
    handler.addFilter(_DropLibraryChatter())
  distributed = initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address,
                                       FLAGS.num_processes, FLAGS.process_id)
  if distributed and jax.process_count() > 1 and jax.default_backend() == 'cpu':
    # Only process 0 writes the persistent cache, and on CPU another process that loads those
    # executables hangs in its first cross-process collective (seen with jax 0.10.2 and gloo):
    # multi-process CPU runs compile in every process instead.
    jax.config.update('jax_enable_compilation_cache', False)
  elif FLAGS.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compilation_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  # Imported here, not at the top: a bad flag or config file is reported before TensorFlow (clu,
  # TFDS) and the models load, in about a second instead of several.
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  cli_errors.run(main, absl_flags=True)
