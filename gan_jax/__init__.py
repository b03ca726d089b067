"""StyleGAN-family image GANs in JAX/Flax. `gan_jax.load_generator(path)` loads a generator."""


def __getattr__(name):  # lazy, so `import gan_jax` stays cheap (no JAX until a loader is used)
  if name == 'load_generator':
    from gan_jax.tools.loading import load_generator  # pylint: disable=g-import-not-at-top
    return load_generator
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
