"""Test session set-up: 8 fake CPU devices, so sharded code runs on 1 and on 8 devices."""

import os

# Must happen before JAX initialises its backends (i.e. before any test module imports jax).
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
