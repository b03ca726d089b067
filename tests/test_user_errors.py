"""User mistakes end a command in one line (exit 2, no traceback); bugs keep their traceback;
no libtpu start-up noise where there is no TPU (gan_jax/cli_errors.py, gan_jax/platforms.py).

The command-line tests run the real entry points as subprocesses, on failures that happen before
anything is compiled (a few seconds each: the imports).
"""

import importlib
import os
import subprocess
import sys

import pytest

from gan_jax import cli_errors
from gan_jax import config_check
from gan_jax import platforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What libtpu prints when it starts on a machine without a TPU (and JAX's note of the failure).
LIBTPU_NOISE = ('could not determine TPU', 'TPU_WORKER_HOSTNAMES', 'libtpu',
                "Unable to initialize backend 'tpu'")


def _cli(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items()
             if k not in ('JAX_PLATFORMS', cli_errors.VERBOSE_ENV)}
  environ.update(PYTHONPATH=REPO, **env)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=environ,
                        capture_output=True, text=True, timeout=300, check=False)


def _error_line(result: subprocess.CompletedProcess) -> str:
  """The one 'error: ' line, after asserting exit status 2, no traceback and that the line ends
  stderr (other lines are log output from before the failure)."""
  assert result.returncode == cli_errors.EXIT_USER_ERROR, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert result.stderr.rstrip().endswith(errors[0])
  return errors[0]


def _tiny(*overrides: str) -> list[str]:
  return ['--config', 'experiments/fashion_mnist.py:tiny', *overrides]


def test_missing_config_file_is_one_line(tmp_path):
  line = _error_line(_cli('gan_jax.main', '--config', 'experiments/nope.py', '--workdir',
                          str(tmp_path / 'w')))
  assert 'experiments/nope.py: no such file' in line
  # The same with an override, which ml_collections applies to the missing config at parse time.
  line = _error_line(_cli('gan_jax.main', '--config', 'experiments/nope.py', '--workdir',
                          str(tmp_path / 'w'), '--config.optim.g_lr=0.1'))
  assert 'experiments/nope.py: no such file' in line


def test_impossible_config_value_is_one_line_without_tpu_noise(tmp_path):
  result = _cli('gan_jax.main', *_tiny('--config.optim.g_lr=inf', '--config.schedule.max_steps=1'),
                '--workdir', str(tmp_path / 'w'))
  assert 'config.optim.g_lr=inf is not allowed' in _error_line(result)
  # JAX started a device (the mesh is made before validation) without loading libtpu.
  for noise in LIBTPU_NOISE:
    assert noise not in result.stderr, result.stderr[-3000:]


def test_unknown_override_key_and_bad_flag_are_one_line(tmp_path):
  line = _error_line(_cli('gan_jax.main', *_tiny('--config.train.g_lrr=0.1'), '--workdir',
                          str(tmp_path / 'w')))
  assert "--config.train.g_lrr: the config has no key 'g_lrr'" in line and 'g_lr' in line
  line = _error_line(_cli('gan_jax.main', *_tiny()))  # no --workdir
  assert '--workdir' in line


def test_none_override_reaches_the_config(tmp_path):
  """--config.augment.target=None (a float field: ml_collections alone fails to parse 'None')
  sets None: the config check then judges a fixed p of 0 with augmentation on."""
  line = _error_line(_cli('gan_jax.main', *_tiny('--config.augment.pipe=bgc',
                                                 '--config.augment.target=None',
                                                 '--config.augment.p=0'),
                          '--workdir', str(tmp_path / 'w')))
  assert 'config.augment.p=0' in line and 'fixed p' in line
  line = _error_line(_cli('gan_jax.main', *_tiny('--config.augment.targett=None'), '--workdir',
                          str(tmp_path / 'w')))
  assert "--config.augment.targett=None: the config has no key 'augment.targett'" in line
  assert not (tmp_path / 'w').exists()


def test_verbose_switch_shows_the_traceback(tmp_path):
  # (--verbose_errors does the same: test_run_prints_user_errors_as_one_line_and_keeps_bugs.)
  result = _cli('gan_jax.main', *_tiny('--config.schedule.kimg=inf'), '--workdir',
                str(tmp_path / 'w'), **{cli_errors.VERBOSE_ENV: '1'})
  assert result.returncode != 0
  assert 'Traceback' in result.stderr and 'ConfigError: config.schedule.kimg=inf' in result.stderr


@pytest.mark.parametrize('module,args', [
    ('gan_jax.tools.generate', ['--checkpoint', '{missing}', '--seeds', '0', '--outdir', '{out}']),
    ('gan_jax.tools.style_mixing', ['--workdir', '{missing}', '--rows', '0', '--cols', '1',
                                    '--outdir', '{out}']),
    ('gan_jax.tools.interpolate', ['--checkpoint', '{missing}', '--seeds', '0,1', '--out',
                                   '{out}/v.gif']),
    ('gan_jax.tools.projector', ['--checkpoint', '{missing}', '--target', '{missing}',
                                 '--outdir', '{out}']),
    ('gan_jax.tools.export', ['--workdir', '{missing}', '--dest', '{out}']),
    ('gan_jax.tools.convert_nvlabs', ['{missing}', '{out}']),
    ('gan_jax.evaluate', ['--workdir', '{missing}', '--metrics', 'fid2k']),
])
def test_tools_name_a_missing_path_in_one_line(module, args, tmp_path):
  missing = str(tmp_path / 'nothing.pkl')
  args = [a.format(missing=missing, out=tmp_path / 'out') for a in args]
  assert missing in _error_line(_cli(module, *args))
  assert not (tmp_path / 'out').exists()


def test_random_bytes_named_pkl_are_one_line(tmp_path):
  path = tmp_path / 'network-snapshot.pkl'
  path.write_bytes(b'\x80\xb9' + os.urandom(256))  # protocol byte 185
  for module, args in (('gan_jax.tools.generate', ['--checkpoint', str(path), '--seeds', '0',
                                                   '--outdir', str(tmp_path / 'out')]),
                       ('gan_jax.tools.convert_nvlabs', [str(path), str(tmp_path / 'out')])):
    line = _error_line(_cli(module, *args))
    assert str(path) in line and 'not a StyleGAN2-ADA network pickle' in line
    assert 'unsupported pickle protocol: 185' in line


def test_prepare_refuses_a_resolution_training_cannot_use_before_writing(tmp_path):
  (tmp_path / 'images').mkdir()
  data_dir = tmp_path / 'tfds'
  line = _error_line(_cli('gan_jax.data.prepare', '--source', str(tmp_path / 'images'), '--name',
                          'odd', '--resolution', '33', '--data_dir', str(data_dir)))
  assert '--resolution 33 cannot be trained on' in line and 'power-of-two' in line
  assert not data_dir.exists()  # nothing written


# ------------------------------------------------------------------------------------------------
# The handler itself, in process.


def _run_in_process(main, monkeypatch, argv=('prog',)):
  monkeypatch.setattr(sys, 'argv', list(argv))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')  # leave this process's JAX as it is
  monkeypatch.delenv(cli_errors.VERBOSE_ENV, raising=False)
  with pytest.raises(SystemExit) as exit_info:
    cli_errors.run(main)
  return exit_info.value.code


def test_run_prints_user_errors_as_one_line_and_keeps_bugs(monkeypatch, capsys):
  def user_error():
    raise config_check.ConfigError('config.x=1 is not allowed:\n  a multi-line\n  message.')

  assert _run_in_process(user_error, monkeypatch) == cli_errors.EXIT_USER_ERROR
  assert capsys.readouterr().err == 'error: config.x=1 is not allowed: a multi-line message.\n'

  def bug():
    return {}['missing']

  with pytest.raises(KeyError):  # not a user error: the traceback stays
    _run_in_process(bug, monkeypatch)
  with pytest.raises(config_check.ConfigError):  # --verbose_errors: re-raised, and removed
    _run_in_process(user_error, monkeypatch, argv=('prog', '--verbose_errors'))
  assert sys.argv == ['prog']
  assert _run_in_process(lambda: 3, monkeypatch) == 3  # a main's own exit status is kept


def test_user_error_classes():
  from gan_jax.data.errors import DatasetError  # pylint: disable=g-import-not-at-top
  from gan_jax.tools import nvlabs_pickle  # pylint: disable=g-import-not-at-top
  for error in (config_check.ConfigError('x'), DatasetError('x'), cli_errors.UserError('x'),
                FileNotFoundError('x'), nvlabs_pickle.UnsafePickleError('x'),
                nvlabs_pickle.UnreadablePickleError('x')):
    assert cli_errors.is_user_error(error), error
  for module, name in cli_errors._USER_ERROR_CLASSES:  # pylint: disable=protected-access
    # Matched by name: a renamed or moved class would silently become a 'bug'.
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Exception) and cli_errors.is_user_error(cls('x')), (module, name)
  for error in (ValueError('x'), KeyError('x'), RuntimeError('x'), TypeError('x')):
    assert not cli_errors.is_user_error(error), error
  # ml_collections embeds the traceback of an error in a config file in its message.
  embedded = ValueError('flag --config=x.py:v: Error whilst parsing config file:\n\nTraceback '
                        '(most recent call last):\n  File "x.py"\nValueError: Unknown variant')
  assert cli_errors.one_line(embedded) == ('flag --config=x.py:v: Error whilst parsing config '
                                           'file: ValueError: Unknown variant')


# ------------------------------------------------------------------------------------------------
# Platforms: libtpu only where a TPU may be.


def _write(path, text=''):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


@pytest.mark.parametrize('files,present', [
    ({}, False),
    ({'sys/bus/pci/devices/0000:00:04.0/vendor': '0x1ae0',
      'sys/bus/pci/devices/0000:00:04.0/device': '0x0063'}, True),  # a v5e chip
    ({'sys/bus/pci/devices/0000:00:04.0/vendor': '0x1ae0',
      'sys/bus/pci/devices/0000:00:04.0/device': '0x0042'}, False),  # Google's gVNIC, no TPU
    ({'sys/bus/pci/devices/0000:00:04.0/vendor': '0x10de',
      'sys/bus/pci/devices/0000:00:04.0/device': '0x0063'}, False),  # NVIDIA's vendor id
    ({'dev/accel0': ''}, True),
    ({'dev/vfio/vfio': ''}, False),  # the vfio control file alone: no device bound
    ({'dev/vfio/vfio': '', 'dev/vfio/0': ''}, True),
])
def test_tpu_presence(tmp_path, files, present):
  for name, text in files.items():
    _write(tmp_path / name, text)
  assert platforms.tpu_present(str(tmp_path)) is present


def test_platform_choice(tmp_path, monkeypatch):
  monkeypatch.setattr(platforms, '_libtpu_installed', lambda: False)
  assert platforms.choose({}, str(tmp_path)) is None  # no libtpu: nothing to keep quiet
  monkeypatch.setattr(platforms, '_libtpu_installed', lambda: True)
  monkeypatch.setattr(platforms, '_plugin_platforms', lambda: set())
  assert platforms.choose({}, str(tmp_path)) == 'cpu'  # libtpu, no TPU, no accelerator
  assert platforms.choose({'JAX_PLATFORMS': ''}, str(tmp_path)) is None  # the user's choice
  monkeypatch.setattr(platforms, '_plugin_platforms', lambda: {'cuda'})
  assert platforms.choose({}, str(tmp_path)) == 'cpu'  # a CUDA plugin, but no NVIDIA device
  _write(tmp_path / 'dev/nvidiactl')
  assert platforms.choose({}, str(tmp_path)) == 'cuda,cpu'  # a GPU machine keeps its GPU
  monkeypatch.setattr(platforms, '_plugin_platforms', lambda: None)
  assert platforms.choose({}, str(tmp_path)) is None  # a plugin we do not know: JAX decides
  monkeypatch.setattr(platforms, '_plugin_platforms', lambda: {'cuda'})
  _write(tmp_path / 'dev/accel0')
  assert platforms.choose({}, str(tmp_path)) is None  # a TPU machine: JAX decides (TPU)
