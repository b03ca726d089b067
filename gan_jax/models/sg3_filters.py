"""StyleGAN3's layer schedule, its low-pass filter designs, and the filtered leaky ReLU.

Everything here but `filtered_lrelu` is NumPy float64 at construction time, as in NVIDIA's
StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"); the results are
constants baked into the traced graph, never variables.

Schedule (the paper's section 3.2 / appendix F, NVIDIA's `SynthesisNetwork`): for layer
i = 0 ... num_layers, e_i = min(i / (num_layers - num_critical), 1); the cutoff f_c and the
minimum stopband f_t follow geometric progressions from (first_cutoff, first_stopband) to
(img_resolution / 2, img_resolution / 2 * last_stopband_rel); the sampling rate is the smallest
power of two >= 2 f_t (capped at img_resolution); the transition half-width
f_h = max(f_t, sr / 2) - f_c; a layer's map is sr + 2 * margin_size samples wide but the last two
are img_resolution; channels rint(min(channel_base / 2 / f_c, channel_max)), the last img_channels.

Filters: a 1-D Kaiser-windowed sinc (SciPy's `firwin(taps, cutoff, width=2 f_h, fs)`, written out
here in NumPy) used separably, or for config R's non-critical downsampling a radially symmetric
2-D filter: jinc(2 pi f_c r) / (pi r) times the outer product of the same Kaiser window.

`filtered_lrelu` runs bias -> upsample (zero insertion, pad, FIR with gain up^2) -> leaky ReLU
with gain -> optional clamp -> FIR and keep every `down`-th sample, like NVIDIA's `filtered_lrelu`
reference path. Each resampling step along one axis is one matrix (upsampling, padding /
cropping, filtering and decimation folded together), so the whole op is four matrix products (a
radial filter: two, over its few separable SVD terms) with no loop over taps in the graph; the
gradient is matrix products too. Axes up to DENSE_MAX samples use one dense matrix; longer ones
(256x256 and larger networks) block-banded ones (`BlockResample`: every block of outputs reads a
short window of inputs through one shared matrix), which need far fewer multiply-adds there.
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Filter design (float64 NumPy).


def kaiser_atten(numtaps: int, width: float) -> float:
  """Kaiser's stopband attenuation (dB) of a filter of `numtaps` taps and transition `width`
  (a fraction of Nyquist)."""
  return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(atten: float) -> float:
  """Kaiser's window parameter for a stopband attenuation in dB."""
  if atten > 50:
    return 0.1102 * (atten - 8.7)
  if atten > 21:
    return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
  return 0.0


def _bessel_j1(x: np.ndarray) -> np.ndarray:
  """Bessel function of the first kind, order 1 (float64), from Bessel's integral
  J1(x) = 1 / (2 pi) * integral over one period of cos(t - x sin t) dt. The trapezoidal rule over
  a full period of this analytic integrand converges geometrically: its error is of the order of
  J_(m - 1)(x) for m points, below 1e-15 for |x| < m / 2 - 20."""
  x = np.asarray(x, np.float64)
  m = max(256, int(2 * np.abs(x).max(initial=0)) + 64)
  t = np.arange(m) * (2 * np.pi / m)
  return np.mean(np.cos(t - x[..., None] * np.sin(t)), axis=-1)


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                   radial: bool = False) -> Optional[np.ndarray]:
  """A Kaiser-windowed low-pass FIR (float32), or None for numtaps 1 (identity).

  Separable: h[m] = 2 fc/fs sinc(2 fc/fs (m - (numtaps - 1) / 2)) times a Kaiser window whose
  beta gives the attenuation of a `width`-wide transition band, scaled to unit DC gain.
  Radial (2-D): jinc(2 pi fc r) / (pi r), r the distance of the tap from the centre in units of
  1 / fs, times the outer product of the window, normalised to sum 1.
  """
  if numtaps < 1:
    raise ValueError(f'numtaps must be >= 1, got {numtaps}')
  if numtaps == 1:
    return None
  nyq = fs / 2
  beta = kaiser_beta(kaiser_atten(numtaps, width / nyq))
  window = np.kaiser(numtaps, beta)
  if not radial:
    m = np.arange(numtaps) - (numtaps - 1) / 2
    c = cutoff / nyq
    h = c * np.sinc(c * m) * window
    return (h / h.sum()).astype(np.float32)
  x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
  r = np.hypot(*np.meshgrid(x, x))
  if np.any(r == 0):
    raise ValueError('a radial filter needs an even number of taps (no tap at r = 0)')
  f = _bessel_j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
  f = f * np.outer(window, window)
  return (f / f.sum()).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The layer schedule.


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One synthesis layer L{index}_{out_size}_{out_channels}; rates in samples per image width."""
  index: int
  is_torgb: bool
  is_critically_sampled: bool
  in_channels: int
  out_channels: int
  in_size: int
  out_size: int
  in_sampling_rate: int
  out_sampling_rate: int
  tmp_sampling_rate: int  # where the leaky ReLU runs
  in_cutoff: float
  out_cutoff: float
  in_half_width: float
  out_half_width: float
  conv_kernel: int
  up: int
  down: int
  up_taps: int
  down_taps: int
  down_radial: bool
  padding: tuple[int, int, int, int]  # (x0, x1, y0, y1) of the zero-upsampled map; < 0 crops

  @property
  def name(self) -> str:
    return f'L{self.index}_{self.out_size}_{self.out_channels}'

  def up_filter(self) -> Optional[np.ndarray]:
    return lowpass_filter(self.up_taps, self.in_cutoff, 2 * self.in_half_width,
                          self.tmp_sampling_rate)

  def down_filter(self) -> Optional[np.ndarray]:
    return lowpass_filter(self.down_taps, self.out_cutoff, 2 * self.out_half_width,
                          self.tmp_sampling_rate, radial=self.down_radial)


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """The Fourier-feature input layer."""
  channels: int
  size: int
  sampling_rate: float
  bandwidth: float


def schedule(img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
             num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
             first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3,
             margin_size: int = 10, conv_kernel: int = 3, filter_size: int = 6,
             lrelu_upsampling: int = 2,
             use_radial_filters: bool = False) -> tuple[InputSpec, list[LayerSpec]]:
  """(input layer, layers L0 ... L{num_layers}) of NVIDIA's SynthesisNetwork for these args."""
  last_cutoff = img_resolution / 2
  last_stopband = last_cutoff * last_stopband_rel
  exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
  cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
  stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
  sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
  half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
  sizes = sampling_rates + margin_size * 2
  sizes[-2:] = img_resolution
  channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
  channels[-1] = img_channels

  specs = []
  for idx in range(num_layers + 1):
    prev = max(idx - 1, 0)
    is_torgb = idx == num_layers
    critical = idx >= num_layers - num_critical
    sr_in, sr_out = int(sampling_rates[prev]), int(sampling_rates[idx])
    tmp = max(sr_in, sr_out) * (1 if is_torgb else lrelu_upsampling)
    up, down = int(round(tmp / sr_in)), int(round(tmp / sr_out))
    if sr_in * up != tmp or sr_out * down != tmp:
      raise ValueError(f'layer {idx}: sampling rates {sr_in}, {tmp}, {sr_out} are not multiples')
    up_taps = filter_size * up if up > 1 and not is_torgb else 1
    down_taps = filter_size * down if down > 1 and not is_torgb else 1
    k = 1 if is_torgb else conv_kernel
    size_in, size_out = int(sizes[prev]), int(sizes[idx])
    pad_total = (size_out - 1) * down + 1 - (size_in + k - 1) * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2  # the symmetric interpretation of sample positions
    pad_hi = pad_total - pad_lo
    specs.append(LayerSpec(
        index=idx, is_torgb=is_torgb, is_critically_sampled=critical,
        in_channels=int(channels[prev]), out_channels=int(channels[idx]),
        in_size=size_in, out_size=size_out, in_sampling_rate=sr_in, out_sampling_rate=sr_out,
        tmp_sampling_rate=tmp, in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
        in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
        conv_kernel=k, up=up, down=down, up_taps=up_taps, down_taps=down_taps,
        down_radial=use_radial_filters and not critical,
        padding=(pad_lo, pad_hi, pad_lo, pad_hi)))
  first = InputSpec(int(channels[0]), int(sizes[0]), float(sampling_rates[0]), float(cutoffs[0]))
  return first, specs


# --------------------------------------------------------------------------------------------
# Filtered leaky ReLU.


def resample_matrix(f: Optional[np.ndarray], n_in: int, up: int = 1, down: int = 1,
                    pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> np.ndarray:
  """(n_out, n_in) float64 matrix of 1-D upfirdn along one axis: insert up - 1 zeros after every
  sample, pad (negative crops), convolve with f * gain, keep every down-th sample from 0."""
  f = np.ones(1) if f is None else np.asarray(f, np.float64)
  taps = len(f)
  n_out = (n_in * up + pad[0] + pad[1] - taps) // down + 1
  if n_out <= 0:
    raise ValueError(f'{taps} taps do not fit {n_in} samples (up {up}, pad {pad})')
  o = np.arange(n_out)[:, None]
  i = np.arange(n_in)[None, :]
  # out[o] = sum_t f[taps - 1 - t] z[o * down + t], where z[m] = x[i] at m = i * up + pad[0].
  t = i * up + pad[0] - o * down
  valid = (t >= 0) & (t < taps)
  return np.where(valid, f[::-1][np.clip(t, 0, taps - 1)], 0.0) * gain


def _separable_terms(f2d: np.ndarray, rtol: float = 1e-7) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(fy, fx), ...] with sum outer(fy, fx) == f2d (SVD terms down to rtol of the largest)."""
  u, s, vt = np.linalg.svd(np.asarray(f2d, np.float64))
  keep = s > s[0] * rtol
  return [(u[:, r] * s[r], vt[r]) for r in np.nonzero(keep)[0]]


# Axes up to this long resample with one dense matrix; longer ones with block-banded matrices.
DENSE_MAX = 128


@dataclasses.dataclass(frozen=True)
class BlockResample:
  """1-D upfirdn along one axis as block-banded matrices (for long axes, where a dense matrix
  would cost n_in multiply-adds per output instead of about the taps).

  Output block j (rows j * rows ... (j + 1) * rows - 1) reads the `width` input samples from
  j * stride + start on (zeros outside the signal), and every block uses the same (rows, width)
  matrix: the resampling is shift-invariant by `stride` inputs per `rows` outputs.
  """
  matrix: np.ndarray  # (rows, width) float32, width = span * stride
  stride: int
  span: int  # input blocks per window
  start: int
  n_in: int
  n_out: int

  @classmethod
  def build(cls, f: Optional[np.ndarray], n_in: int, up: int = 1, down: int = 1,
            pad: tuple[int, int] = (0, 0), gain: float = 1.0,
            stride: int = 32) -> 'BlockResample':
    f = np.ones(1) if f is None else np.asarray(f, np.float64)
    taps = len(f)
    n_out = (n_in * up + pad[0] + pad[1] - taps) // down + 1
    if (stride * up) % down:
      raise ValueError(f'stride {stride} does not fit up {up} / down {down}')
    rows = stride * up // down
    start = -(pad[0] // up)  # the first input the first output reads: ceil(-pad / up)
    last = ((rows - 1) * down - pad[0] + taps - 1) // up  # the last one the block's last reads
    span = -(-(last - start + 1) // stride)
    r = np.arange(rows)[:, None]
    i = start + np.arange(span * stride)[None, :]
    t = i * up + pad[0] - r * down  # out[o] = sum_t f[taps - 1 - t] z[o * down + t]
    valid = (t >= 0) & (t < taps)
    matrix = np.where(valid, f[::-1][np.clip(t, 0, taps - 1)], 0.0) * gain
    return cls(matrix.astype(np.float32), stride, span, start, n_in, n_out)

  def apply(self, x: Array, axis: int) -> Array:
    """Resamples NHWC x along axis 1 (H) or 2 (W)."""
    rows, s, m = self.matrix.shape[0], self.stride, self.span
    blocks = -(-self.n_out // rows)
    length = (blocks - 1 + m) * s
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (-self.start, length + self.start - self.n_in, 0)  # negative values crop
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)
    x = x.reshape(x.shape[:axis] + (blocks - 1 + m, s) + x.shape[axis + 1:])
    windows = jnp.concatenate(
        [jax.lax.slice_in_dim(x, q, q + blocks, axis=axis) for q in range(m)], axis=axis + 1)
    spec = 'rs,nkswc->nkrwc' if axis == 1 else 'rs,nhksc->nhkrc'
    y = jnp.einsum(spec, self.matrix.astype(x.dtype), windows)
    y = y.reshape(y.shape[:axis] + (blocks * rows,) + y.shape[axis + 2:])
    return jax.lax.slice_in_dim(y, 0, self.n_out, axis=axis)


@dataclasses.dataclass(frozen=True)
class FilteredLReLU:
  """The resampling of one layer's filtered leaky ReLU for a given input size (H, W).

  Dense (every axis at most `DENSE_MAX` long): float32 NumPy matrices up_y (H_tmp, H), up_x
  (W_tmp, W) and, per separable term r of the down filter, down_y[r] (H_out, H_tmp), down_x[r]
  (W_out, W_tmp). Otherwise `blocked` holds (up_y, up_x, [down_y per term], [down_x per term])
  as BlockResamples and the matrices are None.
  """
  up_y: Optional[np.ndarray]
  up_x: Optional[np.ndarray]
  down_y: Optional[np.ndarray]  # (R, H_out, H_tmp)
  down_x: Optional[np.ndarray]  # (R, W_out, W_tmp)
  blocked: Optional[tuple] = None

  @classmethod
  def build(cls, fu: Optional[np.ndarray], fd: Optional[np.ndarray], in_hw: tuple[int, int],
            up: int, down: int, padding: tuple[int, int, int, int],
            dense_max: int = DENSE_MAX) -> 'FilteredLReLU':
    px0, px1, py0, py1 = padding
    h, w = in_hw
    up_y = resample_matrix(fu, h, up=up, pad=(py0, py1), gain=up)
    up_x = resample_matrix(fu, w, up=up, pad=(px0, px1), gain=up)
    if fd is not None and np.asarray(fd).ndim == 2:
      terms = _separable_terms(fd)
    else:
      terms = [(fd, fd)]
    tmp_h, tmp_w = up_y.shape[0], up_x.shape[0]
    if max(h, w, tmp_h, tmp_w) > dense_max:
      blocked = (BlockResample.build(fu, h, up=up, pad=(py0, py1), gain=up),
                 BlockResample.build(fu, w, up=up, pad=(px0, px1), gain=up),
                 [BlockResample.build(fy, tmp_h, down=down) for fy, _ in terms],
                 [BlockResample.build(fx, tmp_w, down=down) for _, fx in terms])
      return cls(None, None, None, None, blocked)
    down_y = np.stack([resample_matrix(fy, tmp_h, down=down) for fy, _ in terms])
    down_x = np.stack([resample_matrix(fx, tmp_w, down=down) for _, fx in terms])
    f32 = lambda a: a.astype(np.float32)
    return cls(f32(up_y), f32(up_x), f32(down_y), f32(down_x))


def _lrelu(x: Array, gain: float, slope: float, clamp: Optional[float]) -> Array:
  dt = x.dtype
  if slope != 1:
    x = jnp.where(x >= 0, x, x * np.asarray(slope, dt))
  if gain != 1:
    x = x * np.asarray(gain, dt)
  if clamp is not None and clamp >= 0:
    x = jnp.clip(x, -clamp, clamp)
  return x


def filtered_lrelu(x: Array, ops: FilteredLReLU, bias: Optional[Array] = None,
                   gain: float = math.sqrt(2), slope: float = 0.2,
                   clamp: Optional[float] = None) -> Array:
  """NHWC x -> bias, upsample, leaky ReLU (slope) times gain, clamp, downsample (see module doc)."""
  if bias is not None:
    x = x + bias.astype(x.dtype)
  dt = x.dtype
  if ops.blocked is not None:
    up_y, up_x, down_y, down_x = ops.blocked
    x = _lrelu(up_x.apply(up_y.apply(x, 1), 2), gain, slope, clamp)
    terms = [dx.apply(dy.apply(x, 1), 2) for dy, dx in zip(down_y, down_x)]
    return terms[0] if len(terms) == 1 else sum(terms[1:], terms[0])
  x = jnp.einsum('ph,nhwc->npwc', ops.up_y.astype(dt), x)
  x = jnp.einsum('qw,npwc->npqc', ops.up_x.astype(dt), x)
  x = _lrelu(x, gain, slope, clamp)
  if ops.down_y.shape[0] == 1:
    x = jnp.einsum('ph,nhwc->npwc', ops.down_y[0].astype(dt), x)
    return jnp.einsum('qw,npwc->npqc', ops.down_x[0].astype(dt), x)
  x = jnp.einsum('rph,nhwc->nrpwc', ops.down_y.astype(dt), x)
  return jnp.einsum('rqw,nrpwc->npqc', ops.down_x.astype(dt), x)
