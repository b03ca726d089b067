"""StyleGAN-family image GANs in JAX/Flax. `gan_jax.load_generator(path)` loads a generator,
`gan_jax.load_encoder(workdir)` an encoder run's encoder (gan_jax.encoder)."""


def __getattr__(name):  # lazy, so `import gan_jax` stays cheap (no JAX until a loader is used)
  if name == 'load_generator':
    from gan_jax.tools.loading import load_generator  # pylint: disable=g-import-not-at-top
    return load_generator
  if name == 'load_encoder':
    from gan_jax.encoder import load_encoder  # pylint: disable=g-import-not-at-top
    return load_encoder
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
