"""Few-shot StyleGAN2 on 100 LFW faces with adaptive discriminator augmentation (ADA).

  python -m gan_jax.main --config experiments/lfw_faces_ada.py --workdir runs/lfw_faces_ada
  python -m gan_jax.main --config experiments/lfw_faces_ada.py:tiny --workdir runs/lfw_ada_tiny

Everything as experiments/lfw_faces.py (same network, data, run length), plus NVIDIA's default
'bgc' pipeline (pixel blitting, general geometric, colour) with p tuned toward r_t = 0.6. The
images are grayscale, so hue and saturation are skipped. Compare the two runs' sample grids and
`aug/p`, `aug/rt`, `scores/real_sign` in TensorBoard.
"""

from pathlib import Path

from gan_jax import config_base


def get_config(variant: str = ''):
  base = str(Path(__file__).with_name('lfw_faces.py'))
  config = config_base.load(base + (f':{variant}' if variant else ''))
  config.augment.pipe = 'bgc'
  config.augment.target = 0.6
  # NVIDIA's ada_kimg=500 suits runs of thousands of kimg; this run is 50 kimg, so p may go from
  # 0 to 1 in 10 kimg.
  config.augment.ada_kimg = 10.0
  if variant == 'tiny':
    config.augment.ada_kimg = 0.1  # p visibly moves within the 10 steps
  return config
