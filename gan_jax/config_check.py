"""Validation of a resolved config before anything is built or compiled.

Each failure names the key, the value and what is allowed. Unknown keys and wrong types are
already refused by ml_collections (configs are locked and typed); this checks values.
"""

import math

from gan_jax import augment
from gan_jax import models
from gan_jax import progressive
from gan_jax.metrics import registry
from gan_jax.models import stylegan2


class ConfigError(ValueError):
  """A config value is impossible; the message says which key and what is allowed."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key}={value!r} is not allowed: {allowed}.')


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def _positive(config, key: str, integer: bool = False) -> None:
  node = _get(config, key)
  kind = int if integer else (int, float)
  _require(isinstance(node, kind) and not isinstance(node, bool) and node > 0 and
           math.isfinite(node), key, node,
           f'must be a positive {"integer" if integer else "finite number"}')


# Every numeric knob of config_base and the values it may take: (lowest, highest, what is allowed).
# An end is inclusive, or exclusive when written (bound, OPEN); None: unbounded. Every value must
# also be a finite number (NaN and inf are refused everywhere). A numeric knob added to config_base
# needs a line here: tests/test_config_check.py fails otherwise.
OPEN = 'open'
# config.loss.name: the train steps of gan_jax.steps, and those that train growing networks.
LOSSES = ('stylegan2', 'nonsaturating', 'wgan_gp', 'encoder')
GROWING_LOSSES = ('nonsaturating', 'wgan_gp')
NUMBERS = {
    'seed': (0, 2 ** 32 - 1, 'an integer seed in [0, 2**32)'),
    'encoder.channels': (1, None, 'a positive integer'),
    'encoder.max_channels': (1, None, 'a positive integer'),
    'encoder.lr': ((0, OPEN), None, 'a positive learning rate'),
    'encoder.pixel_weight': (0, None, '0 (off) or a positive weight'),
    'encoder.perceptual_weight': (0, None, '0 (off) or a positive weight'),
    'encoder.w_reg_weight': (0, None, '0 (off) or a positive weight'),
    'model.z_dim': (1, None, 'a positive integer'),
    'model.w_dim': (1, None, 'a positive integer'),
    'model.mapping_layers': (1, None, 'at least 1'),
    'model.channel_base': (1, None, 'a positive integer'),
    'model.channel_max': (1, None, 'a positive integer'),
    'model.conv_clamp': (0, None, '0 (off) or a positive finite clamp'),
    'model.num_bf16_res': (0, None, '0 (all float32) or more'),
    'model.mbstd_group_size': (0, None, '0 (the whole minibatch) or a group size >= 1'),
    'model.mbstd_num_channels': (1, None, 'at least 1'),
    'model.w_avg_beta': (0, 1, 'a number in [0, 1]'),
    'data.prefetch': (1, None, 'at least 1 batch'),
    'data.num_workers': (1, None, 'at least 1 thread'),
    'schedule.batch_size': (1, None, 'a positive integer'),
    'schedule.kimg': ((0, OPEN), None, 'a positive finite number of kimg'),
    'schedule.max_steps': (0, None, '0 (no limit) or a step count'),
    'schedule.growing.start_resolution': (4, None, 'a power of two >= 4'),
    'schedule.growing.fade_kimg': (0, None, 'a finite number of kimg >= 0'),
    'schedule.growing.stabilize_kimg': (0, None, 'a finite number of kimg >= 0'),
    'loss.r1_gamma': (0, None, 'a finite number >= 0'),
    'loss.r1_interval': (0, None, '0 (off) or a step interval'),
    'loss.pl_weight': (0, None, 'a finite number >= 0'),
    'loss.pl_interval': (0, None, '0 (off) or a step interval'),
    'loss.pl_decay': (0, 1, 'a number in [0, 1]'),
    'loss.pl_batch_shrink': (1, None, 'a positive integer'),
    'loss.style_mixing_prob': (0, 1, 'a number in [0, 1]'),
    'loss.blur_init_sigma': (0, None, 'a finite blur sigma >= 0 in pixels (0: off)'),
    'loss.blur_fade_kimg': (0, None, 'a finite number of kimg >= 0'),
    'loss.wgan_lambda': (0, None, 'a finite number >= 0'),
    'loss.wgan_target': ((0, OPEN), None, 'a positive finite number'),
    'loss.wgan_drift': (0, None, 'a finite number >= 0'),
    'optim.g_lr': ((0, OPEN), None, 'a positive finite learning rate'),
    'optim.d_lr': ((0, OPEN), None, 'a positive finite learning rate'),
    'optim.adam_b1': (0, (1, OPEN), 'a number in [0, 1)'),
    'optim.adam_b2': (0, (1, OPEN), 'a number in [0, 1), below 1'),
    'optim.adam_eps': ((0, OPEN), None, 'a positive finite epsilon'),
    'ema.kimg': ((0, OPEN), None, 'a positive finite half-life in kimg'),
    'ema.rampup': (0, None, 'a finite number >= 0 (0: off)'),
    'train.max_rollbacks': (0, None, 'a count >= 0'),
  'train.freeze_d': (0, None, "0 (none) or a count of D's layers from the input side"),
  'train.freeze_g_res': (0, None, '0 (none) or a resolution: freeze the synthesis blocks up to it'),
  'init.step': (-1, None, "-1 (the source workdir's latest checkpoint) or a step"),
    'augment.p': (0, None, 'a finite probability multiplier >= 0'),
    'augment.target': (0, 1, 'None (fixed p) or a target for E[sign(D(real))] in [0, 1]'),
    'augment.ada_kimg': ((0, OPEN), None, 'a positive finite number of kimg'),
    'augment.interval': (1, None, 'a positive integer'),
    'mesh.data': (-1, None, '-1 (all devices) or a positive device count'),
    'mesh.fsdp': (1, None, 'a positive number of devices (1: no parameter sharding)'),
    'mesh.fsdp_min_size': (0, None, 'a number of elements >= 0'),
    'checkpoint.every_steps': (1, None, 'a positive integer'),
    'checkpoint.keep': (1, None, 'a positive integer'),
    'log.every_steps': (1, None, 'a positive integer'),
    'log.image_every_steps': (1, None, 'a positive integer'),
    'log.grid_rows': (1, None, 'a positive integer'),
    'log.grid_cols': (1, None, 'a positive integer'),
    'log.grid_psi': (None, None, 'a finite truncation psi'),
    'evals.every_kimg': (0, None, '0 (only at the end) or a finite interval in kimg'),
    'evals.batch_size': (1, None, 'a positive integer'),
    'evals.max_images': (0, None, "0 (the metrics' own counts) or a cap"),
}


def in_range(value, low, high) -> bool:
  """`value` is a finite number (not a bool) within [low, high] (see NUMBERS for the ends)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    return False
  for end, is_high in ((low, False), (high, True)):
    if end is None:
      continue
    bound, is_open = (end[0], True) if isinstance(end, tuple) else (end, False)
    if (value > bound if is_high else value < bound) or (is_open and value == bound):
      return False
  return True


def _validate_numbers(config) -> None:
  for key, (low, high, allowed) in NUMBERS.items():
    try:
      value = _get(config, key)
    except (KeyError, AttributeError, TypeError):  # a knob or section older configs lack
      continue
    if value is None and key == 'augment.target':  # None: p stays fixed
      continue
    _require(in_range(value, low, high), key, value, allowed)
  _require(config.mesh.data != 0, 'mesh.data', config.mesh.data, NUMBERS['mesh.data'][2])


def validate(config, num_devices: int) -> None:
  """Raises ConfigError for the first impossible value."""
  sched, l, t = config.schedule, config.loss, config.train
  _validate_numbers(config)
  _require(sched.batch_size % num_devices == 0, 'schedule.batch_size', sched.batch_size,
           f'must be divisible by the {num_devices} devices of the mesh')
  _require(l.pl_weight == 0 or l.pl_interval == 0 or l.pl_batch_shrink <= sched.batch_size,
           'loss.pl_batch_shrink', l.pl_batch_shrink,
           f'at most schedule.batch_size={sched.batch_size} (the path-length pass needs one '
           'latent)')
  blur = l.get('blur_init_sigma', 0.0) or 0.0
  _require(blur == 0 or (l.name == 'stylegan2' and l.get('blur_fade_kimg', 0.0) > 0),
           'loss.blur_init_sigma', blur,
           "0 (off), or > 0 with loss.name='stylegan2' and loss.blur_fade_kimg > 0 (the blur "
           'fades out over blur_fade_kimg)')
  _require(t.nonfinite_action in ('halt', 'rollback'), 'train.nonfinite_action',
           t.nonfinite_action, "'halt' or 'rollback'")
  _validate_augment(config)
  backends = config.model.bf16_backends
  _require({b.strip() for b in backends.split(',')} <= {'cpu', 'gpu', 'tpu'},
           'model.bf16_backends', backends, "comma-separated backends of 'cpu', 'gpu', 'tpu'")
  remat, policies = t.remat, sorted(stylegan2.REMAT_POLICIES)
  _require(remat in policies and (remat == 'none' or config.model.name == 'stylegan2'),
           'train.remat', remat, f'one of {policies} (other than none: model stylegan2 only)')
  # D sees the global batch as one array (jit over the mesh), so groups divide the global batch.
  group = config.model.mbstd_group_size
  _require(group == 0 or sched.batch_size % min(group, sched.batch_size) == 0,
           'model.mbstd_group_size', group,
           f'0 (the whole minibatch) or >= 1 and dividing schedule.batch_size={sched.batch_size}')
  _validate_freeze_and_init(config)
  _validate_loss_and_growing(config, num_devices)
  evals = config.get('evals')
  if evals is not None:
    try:
      specs = registry.parse_list(evals.metrics)
    except ValueError as error:
      raise ConfigError(f'config.evals.metrics={evals.metrics!r} is not allowed: {error}') from None
    family = models.FAMILIES.get(config.model.name)
    _require(family is None or family.w_space or all(s.family != 'ppl' for s in specs),
             'evals.metrics', evals.metrics,
             f'metrics without ppl for model {config.model.name!r} (path length walks the W '
             'space; it has none)')
    _require(family is None or family.input_transform or all(s.family != 'eq' for s in specs),
             'evals.metrics', evals.metrics,
             f'metrics without eqt/eqr for model {config.model.name!r} (equivariance transforms '
             "a StyleGAN3 generator's input; it has none)")


def _validate_freeze_and_init(config) -> None:
  """config.train.freeze_* (StyleGAN2's layer names) and config.init."""
  t, init = config.get('train', {}), config.get('init')
  for key in ('freeze_d', 'freeze_g_res', 'freeze_g_mapping'):
    value = t.get(key)
    _require(not value or config.model.name == 'stylegan2', f'train.{key}', value,
             f"0 / False for model {config.model.name!r} (freezing names StyleGAN2's layers)")
  res = t.get('freeze_g_res', 0)
  _require(not res or (res >= 4 and res & (res - 1) == 0), 'train.freeze_g_res', res,
           '0 (none) or a power of two >= 4: the highest resolution whose block is frozen')
  if init is None:
    return
  _require(isinstance(init.source, str), 'init.source', init.source,
           "'' or a path: an NVIDIA .pkl, a training workdir or an export")
  _require(not init.source or not config.resume, 'init.source', init.source,
           f"'' when config.resume is set ({config.resume!r} continues that run exactly; "
           'init.source starts a new run from its weights): set one of them')


def _validate_loss_and_growing(config, num_devices: int) -> None:
  """config.loss.name against config.schedule.growing, and the growth schedule."""
  l, p = config.loss, config.schedule.growing
  _require(l.name in LOSSES, 'loss.name', l.name, f'one of {", ".join(LOSSES)}')
  if l.name == 'encoder':
    _validate_encoder(config)
    return
  if not p.grow:
    _require(config.model.name != 'progan', 'model.name', config.model.name,
             "'progan' trains only with config.schedule.growing.grow=True (for a fixed "
             "resolution set schedule.growing.start_resolution to the data's)")
    _require(l.name == 'stylegan2', 'loss.name', l.name,
             "'stylegan2' without progressive growing ('nonsaturating' and 'wgan_gp' are the "
             'steps of growing networks); set config.schedule.growing.grow=True to use it')
    return
  _require(l.name in GROWING_LOSSES, 'loss.name', l.name,
           f"one of {', '.join(GROWING_LOSSES)} with config.schedule.growing.grow=True "
           "('stylegan2' trains one fixed resolution)")
  _require(config.model.name in ('progan', 'stylegan'), 'model.name', config.model.name,
           "'progan' or 'stylegan' with config.schedule.growing.grow=True")
  _require(l.pl_weight == 0 or config.model.name == 'stylegan', 'loss.pl_weight', l.pl_weight,
           f'0 with model {config.model.name!r}: path length needs a w space (a mapping '
           "network), which only 'stylegan' has among the growing models")
  _require(l.name != 'nonsaturating' or l.r1_gamma == 0 or l.r1_interval == 1,
           'loss.r1_interval', l.r1_interval,
           '1 with progressive growing (R1 runs in every D step, as in StyleGAN; the progressive '
           'step has no lazy R1)')
  _require(2 ** int(round(math.log2(p.start_resolution))) == p.start_resolution,
           'schedule.growing.start_resolution', p.start_resolution, 'a power of two >= 4')
  _require(p.fade_kimg + p.stabilize_kimg > 0, 'schedule.growing.fade_kimg',
           (p.fade_kimg, p.stabilize_kimg),
           'fade_kimg and stabilize_kimg must be >= 0 and not both 0')
  try:
    batch_sizes = progressive.parse_batch_sizes(p.batch_sizes)
  except ValueError as error:
    raise ConfigError(f'config.schedule.growing.batch_sizes={p.batch_sizes!r} is not allowed: '
                      f'{error}') from None
  group = config.model.mbstd_group_size
  others = config.schedule.batch_size
  for res, batch in sorted(batch_sizes.items()) + [('the others', others)]:
    listed = res != 'the others'
    key = 'schedule.growing.batch_sizes' if listed else 'schedule.batch_size'
    _require(batch % num_devices == 0, key, p.batch_sizes if listed else batch,
             f'the batch {batch} at resolution {res} must be divisible by the {num_devices} '
             f'devices of the mesh: use multiples of {num_devices}, or a mesh whose device count '
             f'divides every batch (--config.mesh.data=K)')
    _require(group == 0 or batch % min(group, batch) == 0, 'model.mbstd_group_size', group,
             f'0 (the whole minibatch) or a group size dividing the batch {batch} at resolution '
             f'{res}')


def _validate_encoder(config) -> None:
  """An encoder run (loss.name 'encoder'): a frozen G from init.source, a fixed resolution, a
  W space, and degradations that parse."""
  from gan_jax import degradations  # pylint: disable=g-import-not-at-top
  enc = config.get('encoder')
  _require(enc is not None, 'encoder', enc, 'a config.encoder section (config_base has one)')
  _require(bool(config.init.source) or bool(config.resume), 'init.source', config.init.source,
           "the trained generator to encode into (a workdir, export or NVIDIA .pkl): an encoder "
           "run trains only the encoder, G stays frozen, so it needs one (loss.name='encoder')")
  _require(not config.schedule.growing.grow, 'schedule.growing.grow', True,
           "False with loss.name='encoder' (the frozen G is a finished network)")
  family = models.FAMILIES.get(config.model.name)
  _require(family is None or family.w_space, 'model.name', config.model.name,
           "a family with a W space (stylegan, stylegan2, stylegan3) with loss.name='encoder'")
  _require(enc.images in ('reals', 'generated'), 'encoder.images', enc.images,
           "'reals' or 'generated'")
  try:
    degradations.parse(enc.degradations)
  except ValueError as error:
    raise ConfigError(f'config.encoder.degradations={enc.degradations!r} is not allowed: '
                      f'{error}') from None


def validate_progressive_resolution(config, resolution: int) -> None:
  """The start resolution is at most the data's."""
  start = config.schedule.growing.start_resolution
  _require(start <= resolution, 'schedule.growing.start_resolution', start,
           f'at most the data\'s resolution {resolution}')


def _validate_augment(config) -> None:
  a = config.augment
  _require(a.pipe == 'none' or a.pipe in augment.PRESETS, 'augment.pipe', a.pipe,
           f"'none' or one of {', '.join(augment.PRESETS)}")
  _require(a.pipe == 'none' or a.target is not None or a.p > 0, 'augment.p', a.p,
           f'above 0 with a fixed p (augment.target=None), or pipe {a.pipe!r} never augments')


def validate_resolution(resolution: int, name: str = "the dataset's image resolution") -> None:
  """Training needs square images of a power-of-two size >= 4 (the networks halve it down to 4x4).
  Also checked by `python -m gan_jax.data.prepare` before it writes anything."""
  if not (isinstance(resolution, int) and resolution >= 4 and
          2 ** int(round(math.log2(resolution))) == resolution):
    raise ConfigError(f'{name} {resolution!r} cannot be trained on: the images must be square, of '
                      'a power-of-two size >= 4 (4, 8, 16, ..., 1024)')
