"""Stop requests: SIGTERM / SIGINT (preemption, Ctrl-C) end the run cleanly at a step boundary.

The handler only sets a flag; the loop asks `requested(step)` after each step, saves a checkpoint
and returns. With several processes, SIGTERM is left to JAX's preemption notifier (installed by
jax.distributed.initialize): a SIGTERM to any one process reaches the coordination service, and
JAX's preemption sync point makes every process stop at the same step. SIGINT stays ours there and
is agreed on by an all-gather at tick boundaries.
"""

import signal
import threading

import jax
from absl import logging


def _jax_handles_sigterm() -> bool:
  """Whether jax.distributed started the preemption service (its notifier catches SIGTERM)."""
  return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)


class StopRequest:
  """Context manager installing SIGTERM/SIGINT handlers (main thread only) for its duration."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._signals = signals
    self._previous = {}
    self._event = threading.Event()
    self._count = 0  # signals received
    self.reason = ''

  def __enter__(self) -> 'StopRequest':
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        if sig == signal.SIGTERM and _jax_handles_sigterm():
          continue  # JAX's preemption notifier owns it: do not replace its handler
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    """The first signal asks for a stop and a save; a second one (an impatient Ctrl-C) does not
    abort that save, which is what makes "saved" true; a third stops at once, and the next start
    then resumes from the last committed checkpoint."""
    name = signal.Signals(signum).name
    self._count += 1
    if self._count >= 3:
      raise KeyboardInterrupt(f'{name} received a third time: stopping without saving')
    if self._count == 2:
      logging.warning('%s received again: still finishing the step and saving the checkpoint '
                      '(send it once more to stop without saving).', name)
      return
    self.reason = name
    logging.warning('%s received: finishing the current step, then saving.', self.reason)
    self._event.set()

  def request(self, reason: str = 'requested') -> None:
    self.reason = reason
    self._event.set()

  def requested(self, step: int, at_tick: bool) -> bool:
    """Whether to stop after `step`; identical on every process of a multi-process run.

    Single process: the local flag. Several processes: JAX's preemption sync point every step (an
    RPC to the coordination service, no device sync), and a local signal agreed on by all
    processes at tick boundaries only (an all-gather), so no process stops alone.
    """
    if jax.process_count() == 1:
      return self._event.is_set()
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = self.reason or 'preemption notice'
        return True
    except RuntimeError:  # no preemption service (not started by jax.distributed)
      pass
    if not at_tick:
      return False
    flags = multihost_utils.process_allgather(jax.numpy.int32(self._event.is_set()))
    return bool(flags.max())
