"""Which examples each process reads at each step: a pure function of (seed, step).

The global order is a sequence of epochs; epoch e visits every example once, in
the order `np.random.default_rng([seed, e]).permutation(n)`. The global batch at
step s is positions [s * B, (s + 1) * B) of the concatenated epoch orders, so a
batch may straddle an epoch boundary and no example is dropped or repeated
within an epoch. Process p of P takes the contiguous slice
[p * B / P, (p + 1) * B / P) of the global batch.

Consequences: resuming at step s reproduces exactly the batches an uninterrupted
run would have produced, and the global batch is the same whatever the number
of processes. The x-flip decision for position j of the global batch at step s
is drawn from `default_rng([seed, s, _FLIP_TAG])`, so it is also independent of
the process count and of where a run was resumed.
"""

from __future__ import annotations

import numpy as np

# Distinguishes the flip stream from the epoch-order stream ([seed, epoch]).
# Non-zero so that [seed, step, tag] never equals a zero-padded [seed, epoch].
_FLIP_TAG = 0x666C6970  # 'flip'


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order in which epoch `epoch` visits the examples (a permutation)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def flip_decisions(seed: int, step: int, global_batch_size: int) -> np.ndarray:
  """Bool (global_batch_size,): whether to x-flip each position of a batch."""
  rng = np.random.default_rng([seed, step, _FLIP_TAG])
  return rng.random(global_batch_size) < 0.5


class Sampler:
  """Indices and flips for one process; holds nothing but a small cache.

  Attributes:
    num_examples: size of the split.
    global_batch_size: examples per step over all processes.
    seed: non-negative int; the whole order derives from it.
    process_index, process_count: this process's slice of each global batch.
    xflip: whether `local_batch` returns random flip decisions (else all
      False).
  """

  def __init__(self, num_examples: int, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               xflip: bool = False):
    if num_examples <= 0:
      raise ValueError(f'num_examples must be positive, got {num_examples}.')
    if global_batch_size <= 0:
      raise ValueError(
          f'global_batch_size must be positive, got {global_batch_size}.')
    if process_count <= 0 or not 0 <= process_index < process_count:
      raise ValueError(f'Bad process_index={process_index} for '
                       f'process_count={process_count}.')
    if global_batch_size % process_count:
      raise ValueError(
          f'global_batch_size={global_batch_size} is not divisible by '
          f'process_count={process_count}.')
    if seed < 0:
      raise ValueError(f'seed must be non-negative, got {seed}.')
    self.num_examples = int(num_examples)
    self.global_batch_size = int(global_batch_size)
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.xflip = bool(xflip)
    self.local_batch_size = self.global_batch_size // self.process_count
    self._orders: dict[int, np.ndarray] = {}  # epoch -> order, last few only

  def _epoch_order(self, epoch: int) -> np.ndarray:
    order = self._orders.get(epoch)
    if order is None:
      order = epoch_order(self.seed, epoch, self.num_examples)
      self._orders[epoch] = order
      while len(self._orders) > 3:  # steps move forward: drop the oldest
        del self._orders[min(self._orders)]
    return order

  def global_indices(self, step: int) -> np.ndarray:
    """Example indices (global_batch_size,) of the global batch at `step`."""
    if step < 0:
      raise ValueError(f'step must be non-negative, got {step}.')
    n, b = self.num_examples, self.global_batch_size
    start = step * b
    first_epoch, offset = divmod(start, n)
    last_epoch = (start + b - 1) // n
    orders = [self._epoch_order(e) for e in range(first_epoch, last_epoch + 1)]
    return np.concatenate(orders)[offset:offset + b]

  def _local_slice(self) -> slice:
    lo = self.process_index * self.local_batch_size
    return slice(lo, lo + self.local_batch_size)

  def local_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's (indices, flips), each (local_batch_size,), at `step`."""
    sl = self._local_slice()
    indices = self.global_indices(step)[sl]
    if self.xflip:
      flips = flip_decisions(self.seed, step, self.global_batch_size)[sl]
    else:
      flips = np.zeros(self.local_batch_size, bool)
    return indices, flips
