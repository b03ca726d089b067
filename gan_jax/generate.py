"""`python -m gan_jax.generate ...`: the same command as `python -m gan_jax.tools.generate`."""
from gan_jax import cli_errors
from gan_jax.tools.generate import main

if __name__ == '__main__':
  cli_errors.run(main)
