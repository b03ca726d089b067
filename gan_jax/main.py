"""Entry point: python -m gan_jax.main --config experiments/FILE.py[:VARIANT] --workdir DIR.

Any config value can be overridden on the command line, e.g. --config.train.kimg=10.
Running the same command again resumes from the workdir's latest checkpoint.
"""

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
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
