"""Entry point: python -m gan_jax.main --config experiments/FILE.py[:VARIANT] --workdir DIR.

Any config value can be overridden on the command line, e.g. --config.train.kimg=10.
Running the same command again resumes from the workdir's latest checkpoint.
"""

import logging as std_logging
import os

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gan_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory (local or gs://) for checkpoints, logs, samples.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                'experiments/fashion_mnist.py or experiments/ffhq.py:tiny.',
                                lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-process runs; '
                  'on Cloud TPU and SLURM it finds its peers by itself).')
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  std_logging.getLogger().addFilter(_DropLibraryChatter())
  for handler in std_logging.getLogger().handlers:
    handler.addFilter(_DropLibraryChatter())
  if FLAGS.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compilation_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
