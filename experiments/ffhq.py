"""StyleGAN2 config-f on FFHQ (Karras et al. 2020), at 1024 or 256.

  python -m gan_jax.main --config experiments/ffhq.py --workdir gs://bucket/ffhq1024
  python -m gan_jax.main --config experiments/ffhq.py:256 --workdir gs://bucket/ffhq256
  python -m gan_jax.main --config experiments/ffhq.py:tiny --workdir /tmp/ffhq_tiny   # CPU check

FFHQ is not downloaded at run time: prepare it once as a TFDS dataset (the README's FFHQ section);
the run stops at once with instructions when it is missing. On GPUs and TPUs the 4 highest
resolutions compute in bfloat16 (NVIDIA's mixed precision); on CPU everything stays float32.
`python -m gan_jax.aot --config experiments/ffhq.py --topology v5e-16` checks the fit for a slice.
`:tiny` runs this config's code path (8 mapping layers, style mixing, path length, R1) on the
embedded Fashion-MNIST in seconds.
"""

from gan_jax import config_base


def get_config(variant: str = ''):
  config = config_base.get_base_config()
  config.data.name = 'ffhq/1024'  # the prepared TFDS dataset: ffhq/1024 or ffhq/256
  config.data.xflip = True
  # Config-f: 512 channels up to 64x64, halving above; 8-layer mapping at lr 0.01.
  config.model.channel_base = 32768
  config.model.channel_max = 512
  config.model.mapping_layers = 8
  config.model.conv_clamp = 256
  # NVIDIA's mixed precision (num_fp16_res 4, conv clamp 256) in bfloat16, on accelerators only:
  # on CPU bfloat16 is emulated at half the speed, so G and D stay float32 there. At 1024 the
  # 128..1024 blocks; at 256 the 32..256 ones.
  config.model.num_bf16_res = 4
  config.model.bf16_backends = 'gpu,tpu'
  config.schedule.batch_size = 32
  config.schedule.kimg = 25000.0
  config.optim.g_lr = config.optim.d_lr = 0.002
  config.loss.r1_gamma = 10.0
  config.ema.kimg = 10.0
  config.loss.style_mixing_prob = 0.9
  config.checkpoint.every_steps = 2000
  config.log.every_steps = 125  # 4 kimg ticks, as NVIDIA's
  config.log.image_every_steps = 1250
  config.log.grid_rows, config.log.grid_cols = 4, 8

  if variant == '256':
    # NVIDIA's 'paper256' settings (StyleGAN2-ADA, Table 3 configuration for 256x256 FFHQ).
    config.data.name = 'ffhq/256'
    config.model.channel_base = 16384
    config.model.mbstd_group_size = 8
    config.schedule.batch_size = 64
    config.optim.g_lr = config.optim.d_lr = 0.0025
    config.loss.r1_gamma = 1.0
    config.ema.kimg = 20.0
    config.log.every_steps = 63
  elif variant == 'tiny':
    config_base.apply_tiny(config)  # 10 steps of the tiny network on Fashion-MNIST
    config.loss.r1_interval = 4
    config.loss.pl_interval = 2
  elif variant:
    raise ValueError(f'Unknown variant {variant!r} of ffhq.py (known: 256, tiny).')
  return config
