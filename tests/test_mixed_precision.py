"""Mixed precision (model.num_bf16_res): which blocks run in bfloat16, and that the bfloat16
network computes the same function as the float32 one up to bfloat16 rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.models import stylegan2
from tests import numerics

RES, CH = 16, 3


def test_compute_dtype_follows_nvidias_rule():
  # NVIDIA: fp16_resolution = max(2 ** (log2(res) + 1 - num_fp16_res), 8).
  at = lambda r, n: stylegan2.compute_dtype(r, 1024, n)
  assert [at(r, 4) for r in (64, 128, 1024)] == [jnp.float32, jnp.bfloat16, jnp.bfloat16]
  assert all(at(r, 0) == jnp.float32 for r in (4, 8, 1024))
  assert stylegan2.compute_dtype(4, 32, 10) == jnp.float32  # never below 8x8
  assert stylegan2.compute_dtype(8, 32, 10) == jnp.bfloat16


def _intermediate_dtypes(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_intermediate_dtypes(v, f'{prefix}{k}/'))
    else:
      out[prefix + k] = v[0].dtype if isinstance(v, tuple) and hasattr(v[0], 'dtype') else None
  return out


@pytest.fixture(scope='module')
def nets():
  kw = dict(img_resolution=RES, img_channels=CH, channel_base=256, channel_max=16, conv_clamp=256)
  g32 = stylegan2.Generator(z_dim=16, w_dim=16, mapping_layers=2, **kw)
  g16 = g32.clone(num_bf16_res=2)
  d32 = stylegan2.Discriminator(**kw)
  d16 = d32.clone(num_bf16_res=2)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
  img = jax.random.normal(jax.random.PRNGKey(2), (4, RES, RES, CH))
  gvars = g32.init({'params': jax.random.PRNGKey(3)}, z, None)
  dvars = d32.init({'params': jax.random.PRNGKey(4)}, img)
  return g32, g16, d32, d16, z, img, gvars, dvars


def test_generator_bf16_blocks_and_values(nets):
  g32, g16, _, _, z, _, gvars, _ = nets
  ref = g32.apply(gvars, z, None, noise_mode='const')
  out, inter = g16.apply(gvars, z, None, noise_mode='const', capture_intermediates=True,
                         mutable=['intermediates'])
  dtypes = _intermediate_dtypes(inter['intermediates'])
  assert dtypes['synthesis/b16/conv1/__call__'] == jnp.bfloat16
  assert dtypes['synthesis/b8/conv0/__call__'] == jnp.bfloat16
  assert dtypes['synthesis/b4/conv1/__call__'] == jnp.float32
  assert out.dtype == jnp.float32  # the RGB skip sum stays float32
  err = np.abs(np.asarray(out) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max()
  assert 1e-5 < err < 5e-2, err  # bfloat16 rounding (8 mantissa bits), not a different function


def test_discriminator_bf16_blocks_values_and_gradients(nets):
  _, _, d32, d16, _, img, _, dvars = nets
  ref = d32.apply(dvars, img)
  out, inter = d16.apply(dvars, img, capture_intermediates=True, mutable=['intermediates'])
  dtypes = _intermediate_dtypes(inter['intermediates'])
  assert dtypes['b16/__call__'] == jnp.bfloat16 and dtypes['b8/__call__'] == jnp.bfloat16
  assert dtypes['b4/__call__'] == jnp.float32
  assert out.dtype == jnp.float32
  numerics.assert_close(out, ref, 5e-2, 'bfloat16 D logits')  # bfloat16 rounding, not O(1)
  # Gradients reach float32 params through the bfloat16 blocks, in the float32 direction.
  loss = lambda d: lambda p: jnp.sum(jnp.square(d.apply({'params': p}, img)))
  g_ref = jax.grad(loss(d32))(dvars['params'])['b16']['conv0']['weight']
  g_mix = jax.grad(loss(d16))(dvars['params'])['b16']['conv0']['weight']
  assert g_mix.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g_mix)))
  cos = jnp.vdot(g_ref, g_mix) / (jnp.linalg.norm(g_ref) * jnp.linalg.norm(g_mix))
  assert float(cos) > 0.99, float(cos)
