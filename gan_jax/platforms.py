"""Which JAX platforms a gan_jax command line starts: libtpu stays unloaded where there is no TPU.

With libtpu installed (the `aot` extra, and so the test extras), JAX's backend discovery loads it in
every process that touches a device, TPU or not. On a machine without TPU chips libtpu then prints
its initialisation errors to stderr before JAX falls back ("Failed to find host bounds for
accelerator type: WARNING: could not determine TPU accelerator type ...", "E0000 ...
common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname ..."). JAX itself already
knows there is no TPU (jax/_src/cloud_tpu_init.py scans PCI and sets TPU_SKIP_MDS_QUERY=1), but it
still tries the 'tpu' backend, which is what prints. Log levels (TPU_MIN_LOG_LEVEL,
TPU_STDERR_LOG_LEVEL) do not silence these lines.

So, when JAX_PLATFORMS is unset, libtpu is installed and no TPU is attached, the command lines name
the platforms JAX should start: the accelerators that are present and have a JAX plugin (CUDA,
ROCm) plus the CPU. Where TPU chips may be present, or JAX_PLATFORMS is set, or a JAX plugin we do
not know is installed, JAX's own choice is left alone. Only command lines do this (`cli_errors.run`
calls `skip_absent_tpu`); `import gan_jax` changes nothing.

A TPU counts as present (cheap checks, no library loaded) when any of these holds:
  - a PCI device of Google's vendor id 0x1ae0 with a TPU device id (the table JAX's
    hardware_utils uses: v3 .. TPU7x);
  - /dev/accel* exists (TPU VMs up to v5e expose their chips as accel devices);
  - /dev/vfio/ holds a numbered group (v5p and v6e chips are bound to vfio; so may other
    passed-through devices, in which case JAX's own choice is kept).
A GPU counts as present as JAX itself checks it: /dev/nvidia0, /dev/nvidiactl or /dev/dxg for
CUDA, /dev/kfd or /dev/dxg for ROCm; so a GPU machine still starts its GPU ('cuda,cpu').

`gan_jax.aot` starts libtpu on purpose (its compiler, for a TPU topology); there the variables
libtpu asks for are set to the slice being compiled for (see `aot.topology_devices`).
"""

import glob
import importlib.util
import os
import pkgutil
import sys
from typing import Mapping, Optional

_GOOGLE_PCI_VENDOR = '0x1ae0'
# TPU PCI device ids, as jax/_src/hardware_utils.py lists them (v3, plc, v4, v5p, v5e, v6e, 7x).
_TPU_PCI_DEVICES = frozenset({'0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f',
                              '0x0076'})
_NVIDIA_DEVICES = ('/dev/nvidia0', '/dev/nvidiactl', '/dev/dxg')  # JAX's own CUDA check
_AMD_DEVICES = ('/dev/kfd', '/dev/dxg')


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ''


def tpu_present(root: str = '/') -> bool:
  """True when a TPU may be attached to this machine (see the module docstring)."""
  for vendor in glob.glob(os.path.join(root, 'sys/bus/pci/devices/*/vendor')):
    if (_read(vendor) == _GOOGLE_PCI_VENDOR and
        _read(os.path.join(os.path.dirname(vendor), 'device')) in _TPU_PCI_DEVICES):
      return True
  if glob.glob(os.path.join(root, 'dev/accel*')):
    return True
  return any(name.isdigit() for name in _listdir(os.path.join(root, 'dev/vfio')))


def _listdir(path: str) -> list[str]:
  try:
    return os.listdir(path)
  except OSError:
    return []


def _libtpu_installed() -> bool:
  return importlib.util.find_spec('libtpu') is not None


def _plugin_platforms() -> Optional[set[str]]:
  """Platforms of the installed JAX PJRT plugins, found as JAX finds them (the jax_plugins
  namespace and the 'jax_plugins' entry points); None when one is not a CUDA or ROCm plugin."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  names = set()
  spec = importlib.util.find_spec('jax_plugins')
  if spec is not None and spec.submodule_search_locations:
    names.update(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations))
  names.update(e.value for e in metadata.entry_points(group='jax_plugins'))
  platforms = set()
  for name in names:
    if 'cuda' in name:
      platforms.add('cuda')
    elif 'rocm' in name:
      platforms.add('rocm')
    else:
      return None
  return platforms


def choose(environ: Mapping[str, str] = os.environ, root: str = '/') -> Optional[str]:
  """The JAX_PLATFORMS value that keeps libtpu unloaded, or None to leave JAX's choice."""
  if 'JAX_PLATFORMS' in environ or tpu_present(root):
    return None
  if not environ.get('TPU_LIBRARY_PATH') and not _libtpu_installed():
    return None  # no libtpu: nothing to keep quiet
  plugins = _plugin_platforms()
  if plugins is None:
    return None
  present = {'cuda': any(os.path.exists(os.path.join(root, d.lstrip('/')))
                         for d in _NVIDIA_DEVICES),
             'rocm': any(os.path.exists(os.path.join(root, d.lstrip('/'))) for d in _AMD_DEVICES)}
  return ','.join([p for p in ('cuda', 'rocm') if p in plugins and present[p]] + ['cpu'])


def skip_absent_tpu() -> Optional[str]:
  """Names JAX's platforms per `choose` (before any device is touched); returns the value set."""
  platforms = choose()
  if platforms is None:
    return None
  os.environ['JAX_PLATFORMS'] = platforms  # read when jax is imported (and by child processes)
  if 'jax' in sys.modules:  # imported already: the config read the variable then
    sys.modules['jax'].config.update('jax_platforms', platforms)
  return platforms
