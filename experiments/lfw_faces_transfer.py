"""Few-shot transfer: fine-tune a Fashion-MNIST network on the 100 LFW faces with ADA.

  python -m gan_jax.main --config experiments/fashion_mnist.py --workdir runs/fm_source \
      --config.schedule.kimg=10
  python -m gan_jax.main --config experiments/lfw_faces_transfer.py --workdir runs/lfw_transfer \
      --config.init.source=runs/fm_source
  python -m gan_jax.main --config experiments/lfw_faces_transfer.py:tiny --workdir runs/lfw_tt \
      --config.init.source=runs/fmnist_tiny

Everything as experiments/lfw_faces_ada.py (same network, data, ADA, run length), started from
the weights of a Fashion-MNIST run of the same network (experiments/fashion_mnist.py: 32x32
grayscale, z/w 128, 2 mapping layers, 32 channels at every resolution) instead of a random init:
G, G_ema and D (gan_jax/transfer.py); step 0, fresh Adam states, this config's schedule. The
source's w_avg is kept; ADA's p starts at 0 as in the scratch run. FreezeD is off here
(--config.train.freeze_d=4 freezes D's 32x32 block, NVIDIA's --freezed=4). README "Transfer
learning" compares it with lfw_faces_ada.py from scratch at the same kimg.
"""

from pathlib import Path

from gan_jax import config_base


def get_config(variant: str = ''):
  base = str(Path(__file__).with_name('lfw_faces_ada.py'))
  config = config_base.load(base + (f':{variant}' if variant else ''))
  config.init.source = 'runs/fm_source'  # the workdir of the Fashion-MNIST run above
  return config
