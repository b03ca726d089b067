"""User errors end a command line in one line; bugs keep their traceback.

Every command line (gan_jax.main, gan_jax.evaluate, gan_jax.aot, gan_jax.data.prepare,
gan_jax.data.ffhq, gan_jax.metrics.fetch, gan_jax.tools.*) runs its `main` through `run`. A user
error — an impossible config value, a missing or unreadable file, a dataset to prepare first, a
workdir that holds another run, a checkpoint that cannot be restored, a training run that went
non-finite, a bad flag — is printed as

  error: <what is wrong and what to do>

on stderr, and the command exits with status 2 (EXIT_USER_ERROR). Any other exception is a bug and
keeps its traceback. `--verbose_errors` (anywhere on the command line) or GAN_JAX_VERBOSE_ERRORS=1
shows the traceback of user errors too.

The user errors are the classes below, matched by name so that this module imports none of their
(heavy) modules, plus `UserError` for bad values, files and set-ups that have no error class of
their own, and the OS errors about a path (FileNotFoundError, FileExistsError, PermissionError,
IsADirectoryError, NotADirectoryError), whose messages name the path.
"""

import os
import re
import sys
from typing import Any, Callable, NoReturn, Optional

VERBOSE_FLAG = '--verbose_errors'
VERBOSE_ENV = 'GAN_JAX_VERBOSE_ERRORS'
EXIT_USER_ERROR = 2

# (module, class) of the user-error classes of the package and of absl.
_USER_ERROR_CLASSES = (
    ('gan_jax.config_check', 'ConfigError'),
    ('gan_jax.config_compat', 'RenamedKeyError'),
    ('gan_jax.data.errors', 'DatasetError'),
    ('gan_jax.checkpointing', 'CheckpointError'),
    ('gan_jax.workdir', 'WorkdirError'),
    ('gan_jax.guard', 'NonFiniteError'),
    ('gan_jax.torch_pickle', 'UnsafePickleError'),  # also named in gan_jax.tools.nvlabs_pickle
    ('gan_jax.torch_pickle', 'UnreadablePickleError'),
    ('absl.app', 'UsageError'),
    ('absl.flags', 'Error'),
)
_PATH_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                NotADirectoryError)


class UserError(ValueError):
  """A value, file or set-up a command cannot use; the message says which and what to do.

  For the problems that have no error class of their own (the package's are listed above).
  """


def is_user_error(error: BaseException) -> bool:
  """True for the errors a user can fix (module docstring); False for bugs."""
  if isinstance(error, (UserError,) + _PATH_ERRORS):
    return True
  for module, name in _USER_ERROR_CLASSES:
    cls = getattr(sys.modules.get(module), name, None)  # not imported: cannot have been raised
    if isinstance(cls, type) and isinstance(error, cls):
      return True
  return False


def one_line(error: BaseException) -> str:
  """The error's message on one line. A message that embeds a traceback (ml_collections does
  that for errors in a config file) keeps its first and last lines."""
  text = str(error).strip() or type(error).__name__
  if 'Traceback (most recent call last)' in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = f'{lines[0]} {lines[-1]}'
  if isinstance(error, KeyError) and text.startswith(("'", '"')):
    text = text.strip('\'"')
  return re.sub(r'\s*\n\s*', ' ', text)


def verbose(argv: Optional[list[str]] = None) -> bool:
  """Whether tracebacks of user errors are wanted; removes --verbose_errors from `argv`
  (default sys.argv) so that the command's own parser never sees it."""
  argv = sys.argv if argv is None else argv
  wanted = VERBOSE_FLAG in argv[1:]
  while VERBOSE_FLAG in argv[1:]:
    argv.remove(VERBOSE_FLAG)
  return wanted or os.environ.get(VERBOSE_ENV, '') not in ('', '0')


def fail(message: str) -> NoReturn:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def run(main: Callable[..., Any], absl_flags: bool = False) -> NoReturn:
  """Runs a command line's `main` and exits with its status (an int it returns, else 0).

  `absl_flags`: `main(argv)` is an absl main; its flags are parsed here (a bad flag is one line
  too). Otherwise `main()` parses sys.argv itself (argparse).
  """
  from gan_jax import platforms  # pylint: disable=g-import-not-at-top
  show_traceback = verbose()
  platforms.skip_absent_tpu()

  def guarded(*args):
    try:
      return main(*args)
    except Exception as error:  # pylint: disable=broad-except
      if show_traceback or not is_user_error(error):
        raise
      fail(one_line(error))

  if absl_flags:
    from absl import app  # pylint: disable=g-import-not-at-top
    # Parses the flags, calls main(argv) and exits with its status.
    app.run(guarded, flags_parser=lambda argv: _parse_absl_flags(argv, show_traceback))
  status = guarded()
  sys.exit(status if isinstance(status, int) else 0)


# --config.KEY=None overrides, by config flag name: ml_collections parses an override with the
# field's type ('could not convert string to float: None' for augment.target), so they are taken
# out of argv before absl parses it and set on the loaded config by `config_flag`.
_NONE_OVERRIDES: dict[str, list[str]] = {}


def _take_none_overrides(argv: list[str]) -> list[str]:
  """argv without its --NAME.KEY=None arguments, which are kept in _NONE_OVERRIDES."""
  rest = []
  for arg in argv:
    match = re.fullmatch(r'--(\w+)\.([\w.]+)=None', arg)
    if match and rest:  # (argv[0] is the program)
      _NONE_OVERRIDES.setdefault(match.group(1), []).append(match.group(2))
    else:
      rest.append(arg)
  return rest


def _parse_absl_flags(argv: list[str], show_traceback: bool) -> list[str]:
  """absl's flag parsing with its errors (and ml_collections' unknown --config.KEY overrides) as
  one line instead of a usage dump or a traceback."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    argv = _take_none_overrides(argv)
    if sys.argv[1:] and sys.argv[0] == argv[0]:
      sys.argv[:] = argv  # ml_collections reads the --config.KEY overrides from sys.argv too
    return flags.FLAGS(argv)
  except flags.Error as error:
    if show_traceback:
      raise
    fail(f'{one_line(error)} (--helpshort lists the flags)')
  except (KeyError, AttributeError) as error:  # an override of a key the config does not have
    if show_traceback:
      raise
    fail(_unknown_key(error, argv))
  except OSError as error:  # an override applied to a config file that failed to load
    spec = _argv_value(argv, 'config')
    if show_traceback or spec is None:
      raise
    fail(_unloadable_config('config', spec.split(':', 1)[0], error))


def _argv_value(argv: list[str], name: str) -> Optional[str]:
  """The value of --name=VALUE or --name VALUE in argv."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unloadable_config(name: str, path: str, error: BaseException) -> str:
  # ml_collections' message lists the attempts; its last line is the reason of the last one.
  reason = ('no such file' if not os.path.exists(path) else
            str(error.__cause__ or error).strip().splitlines()[-1].strip())
  return (f'--{name}={path}: {reason}; pass an experiment file, e.g. '
          f'--{name}=experiments/fashion_mnist.py:tiny')


def _unknown_key(error: BaseException, argv: list[str]) -> str:
  """'--config.optim.g_lrr: the config has no key 'g_lrr'. Did you mean "g_lr" ...?'"""
  message = error
  while isinstance(message, BaseException) and message.args:  # AttributeError(KeyError(text))
    message = message.args[0]
  lines = str(message).splitlines() or ['?']
  key = lines[0].strip('\'"')
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  named = [o for o in overrides if o.split('.')[-1] == key] or overrides
  return ' '.join([f'{", ".join(named)}: the config has no key {key!r}.'] + lines[1:])


def config_flag(name: str = 'config') -> Any:
  """The value of an ml_collections config-file flag. That library defers a failure to load the
  file to the first use of the config (as a chained traceback); this raises it as a UserError
  naming the file instead. --NAME.KEY=None overrides (which ml_collections cannot parse for a
  typed field) are set here."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  value = flags.FLAGS[name].value
  try:
    getattr(value, 'keys')  # the stand-in for a config that failed to load raises OSError here
  except OSError as error:
    path = config_flags.get_config_filename(flags.FLAGS[name])
    raise UserError(_unloadable_config(name, path, error)) from error
  for key in _NONE_OVERRIDES.get(name, ()):  # --config.KEY=None
    *parents, leaf = key.split('.')
    node = value
    for part in parents + [leaf]:
      if not hasattr(node, 'keys') or part not in node:
        raise UserError(f'--{name}.{key}=None: the config has no key {key!r}.')
      if part != leaf:
        node = node[part]
    node[leaf] = None
  return value
