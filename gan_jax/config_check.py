"""Validation of a resolved config before anything is built or compiled.

Each failure names the key, the value and what is allowed. Unknown keys and wrong types are
already refused by ml_collections (configs are locked and typed); this checks values.
"""

import math

from gan_jax import augment
from gan_jax import progressive
from gan_jax.metrics import registry
from gan_jax.models import stylegan2


class ConfigError(ValueError):
  """A config value is impossible; the message says which key and what is allowed."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key}={value!r} is not allowed: {allowed}.')


def _positive(config, key: str, integer: bool = False) -> None:
  node = config
  for part in key.split('.'):
    node = node[part]
  kind = int if integer else (int, float)
  _require(isinstance(node, kind) and not isinstance(node, bool) and node > 0, key, node,
           f'must be a positive {"integer" if integer else "number"}')


def validate(config, num_devices: int) -> None:
  """Raises ConfigError for the first impossible value."""
  t = config.train
  for key in ('train.batch_size', 'checkpoint.every_steps', 'checkpoint.keep', 'log.every_steps',
              'log.image_every_steps', 'log.grid_rows', 'log.grid_cols', 'model.z_dim',
              'model.w_dim', 'model.channel_base', 'model.channel_max', 'train.pl_batch_shrink'):
    _positive(config, key, integer=True)
  for key in ('train.kimg', 'train.g_lr', 'train.d_lr', 'train.ema_kimg'):
    _positive(config, key)
  _require(t.batch_size % num_devices == 0, 'train.batch_size', t.batch_size,
           f'must be divisible by the {num_devices} devices of the mesh')
  _require(isinstance(config.mesh.fsdp, int) and config.mesh.fsdp >= 1, 'mesh.fsdp',
           config.mesh.fsdp, 'a positive number of devices (1: no parameter sharding)')
  _require(config.mesh.fsdp_min_size >= 0, 'mesh.fsdp_min_size', config.mesh.fsdp_min_size,
           'a number of elements >= 0')
  _require(t.max_steps >= 0, 'train.max_steps', t.max_steps, '0 (no limit) or a step count')
  for key in ('r1_interval', 'pl_interval'):
    _require(t[key] >= 0, f'train.{key}', t[key], '0 (off) or a step interval')
  for key in ('r1_gamma', 'pl_weight', 'ema_rampup'):
    _require(t[key] >= 0 and math.isfinite(t[key]), f'train.{key}', t[key],
             'a finite number >= 0')
  for key in ('adam_b1', 'adam_b2', 'pl_decay', 'style_mixing_prob', 'w_avg_beta'):
    _require(0 <= t[key] <= 1, f'train.{key}', t[key], 'a number in [0, 1]')
  _require(t.adam_b2 < 1, 'train.adam_b2', t.adam_b2, 'below 1')
  _require(t.nonfinite_action in ('halt', 'rollback'), 'train.nonfinite_action',
           t.nonfinite_action, "'halt' or 'rollback'")
  _require(t.max_rollbacks >= 0, 'train.max_rollbacks', t.max_rollbacks, 'a count >= 0')
  _validate_augment(config)
  _require(config.model.mapping_layers >= 1, 'model.mapping_layers', config.model.mapping_layers,
           'at least 1')
  _require(config.model.conv_clamp >= 0, 'model.conv_clamp', config.model.conv_clamp,
           '0 (off) or a positive clamp')
  _require(config.model.get('num_bf16_res', 0) >= 0, 'model.num_bf16_res',
           config.model.get('num_bf16_res', 0), '0 (all float32) or more')
  backends = config.model.get('bf16_backends', 'cpu')
  _require({b.strip() for b in backends.split(',')} <= {'cpu', 'gpu', 'tpu'},
           'model.bf16_backends', backends, "comma-separated backends of 'cpu', 'gpu', 'tpu'")
  remat, policies = t.get('remat', 'none'), sorted(stylegan2.REMAT_POLICIES)
  _require(remat in policies and (remat == 'none' or config.model.name == 'stylegan2'),
           'train.remat', remat, f'one of {policies} (other than none: model stylegan2 only)')
  # D sees the global batch as one array (jit over the mesh), so groups divide the global batch.
  group = config.model.mbstd_group_size
  _require(group == 0 or (group >= 1 and t.batch_size % min(group, t.batch_size) == 0),
           'model.mbstd_group_size', group,
           f'0 (the whole minibatch) or >= 1 and dividing train.batch_size={t.batch_size}')
  _require(config.model.mbstd_num_channels >= 1, 'model.mbstd_num_channels',
           config.model.mbstd_num_channels, 'at least 1')
  _validate_progressive(config, num_devices)
  evals = config.get('evals')
  if evals is not None:
    try:
      registry.parse_list(evals.metrics)
    except ValueError as error:
      raise ConfigError(f'config.evals.metrics={evals.metrics!r} is not allowed: {error}') from None
    _require(evals.every_kimg >= 0, 'evals.every_kimg', evals.every_kimg,
             '0 (only at the end) or an interval in kimg')
    _positive(config, 'evals.batch_size', integer=True)
    _require(evals.max_images >= 0, 'evals.max_images', evals.max_images,
             '0 (the metrics\' own counts) or a cap')


def _validate_progressive(config, num_devices: int) -> None:
  """config.progressive and the loss knobs of the progressive loop (gan_jax/train_progressive)."""
  t, p = config.train, config.get('progressive')
  enabled = p is not None and p.enabled
  loss = t.get('loss', 'nonsaturating')
  _require(loss in ('nonsaturating', 'wgan_gp'), 'train.loss', loss,
           "'nonsaturating' or 'wgan_gp'")
  if not enabled:
    _require(config.model.name != 'progan', 'model.name', config.model.name,
             "'progan' trains only with config.progressive.enabled=True (for a fixed resolution "
             'set progressive.start_resolution to the data\'s)')
    _require(loss == 'nonsaturating', 'train.loss', loss,
             "'nonsaturating' without progressive growing (the StyleGAN2 loop has no WGAN-GP); "
             'set config.progressive.enabled=True to use it')
    return
  _require(config.model.name in ('progan', 'stylegan'), 'model.name', config.model.name,
           "'progan' or 'stylegan' with config.progressive.enabled=True")
  _require(t.wgan_lambda >= 0 and math.isfinite(t.wgan_lambda), 'train.wgan_lambda',
           t.wgan_lambda, 'a finite number >= 0')
  _positive(config, 'train.wgan_target')
  _require(t.wgan_drift >= 0 and math.isfinite(t.wgan_drift), 'train.wgan_drift', t.wgan_drift,
           'a finite number >= 0')
  _require(t.pl_weight == 0, 'train.pl_weight', t.pl_weight,
           '0 with progressive growing (its loop has no path-length term; StyleGAN had none)')
  _require(loss != 'nonsaturating' or t.r1_gamma == 0 or t.r1_interval == 1, 'train.r1_interval',
           t.r1_interval, '1 with progressive growing (R1 runs in every D step, as in StyleGAN)')
  _require(config.augment.pipe == 'none', 'augment.pipe', config.augment.pipe,
           "'none' with progressive growing (ADA is not part of the progressive loop)")
  evals = config.get('evals')
  _require(evals is None or not evals.metrics, 'evals.metrics', evals and evals.metrics,
           "'' with progressive growing (the network grows during the run); evaluate a finished "
           'stylegan run with python -m gan_jax.evaluate')
  _require(p.start_resolution >= 4 and 2 ** int(round(math.log2(p.start_resolution)))
           == p.start_resolution, 'progressive.start_resolution', p.start_resolution,
           'a power of two >= 4')
  _require(p.fade_kimg >= 0 and p.stabilize_kimg >= 0 and p.fade_kimg + p.stabilize_kimg > 0,
           'progressive.fade_kimg', (p.fade_kimg, p.stabilize_kimg),
           'fade_kimg and stabilize_kimg must be >= 0 and not both 0')
  _positive(config, 'progressive.default_batch_size', integer=True)
  try:
    batch_sizes = progressive.parse_batch_sizes(p.batch_sizes)
  except ValueError as error:
    raise ConfigError(f'config.progressive.batch_sizes={p.batch_sizes!r} is not allowed: '
                      f'{error}') from None
  group = config.model.mbstd_group_size
  for res, batch in sorted(batch_sizes.items()) + [('the others', p.default_batch_size)]:
    key = ('progressive.batch_sizes' if res != 'the others' else 'progressive.default_batch_size')
    _require(batch % num_devices == 0, key, p.batch_sizes if res != 'the others' else batch,
             f'the batch {batch} at resolution {res} must be divisible by the {num_devices} '
             f'devices of the mesh: use multiples of {num_devices}, or a mesh whose device count '
             f'divides every batch (--config.mesh.data=K)')
    _require(group == 0 or batch % min(group, batch) == 0, 'model.mbstd_group_size', group,
             f'0 (the whole minibatch) or a group size dividing the batch {batch} at resolution '
             f'{res}')


def validate_progressive_resolution(config, resolution: int) -> None:
  """The start resolution is at most the data's."""
  start = config.progressive.start_resolution
  _require(start <= resolution, 'progressive.start_resolution', start,
           f'at most the data\'s resolution {resolution}')


def _validate_augment(config) -> None:
  a = config.augment
  _require(a.pipe == 'none' or a.pipe in augment.PRESETS, 'augment.pipe', a.pipe,
           f"'none' or one of {', '.join(augment.PRESETS)}")
  _require(math.isfinite(a.p) and a.p >= 0, 'augment.p', a.p,
           'a finite probability multiplier >= 0')
  _require(a.target is None or 0 <= a.target <= 1, 'augment.target', a.target,
           'None (fixed p) or a target for E[sign(D(real))] in [0, 1]')
  _positive(config, 'augment.ada_kimg')
  _positive(config, 'augment.interval', integer=True)
  _require(a.pipe == 'none' or a.target is not None or a.p > 0, 'augment.p', a.p,
           f'above 0 with a fixed p (augment.target=None), or pipe {a.pipe!r} never augments')


def validate_resolution(resolution: int) -> None:
  _require(resolution >= 4 and 2 ** int(round(math.log2(resolution))) == resolution,
           'data (image resolution)', resolution,
           'the dataset must hold square images of a power-of-two size, 4 to 1024')
