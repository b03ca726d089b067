"""Measure an encoder run on held-out images: reconstruction / translation quality and time, against
the projector (and bicubic upsampling for super-resolution).

  python -m gan_jax.encoder_eval --workdir runs/enc_sr4 --num 200 --projector_num 10 \
      --projector_steps 200 --fid --out runs/enc_sr4/eval.json

Held-out images: `--num` images of the dataset's `--split` (default 'test'; the encoder trained
on 'train'), drawn by the input pipeline with seed 0 (the same images for every run of the same
dataset). For each image the encoder's input is the run's degradation of it (mask positions from
seed 0) and the target the clean image; class:A>B runs are measured differently (there is no
ground truth for a translation): only the small-sample FID of the outputs against held-out images
of class B, the translated inputs being test images of class A, next to the FID of the inputs
themselves, of G's own class-B samples (what its outputs can reach) and of other real class-B
images (the floor).

Reported (means over images): PSNR in dB on [-1, 1] images (peak-to-peak 2), MSE, and the
LPIPS-style Inception distance of `gan_jax.tools.perceptual` (uniform weights, 4 taps; 0 for equal
images); seconds per image of the encoder (one jitted forward pass of E and G at batch 1, after
its compilation) and of the projector (`--projector_steps` steps of StyleGAN2-ADA's projector,
pixel distance, W space, on the first `--projector_num` images; the first image's compilation
excluded); for downK also bicubic upsampling of the K-times box-downscaled image; with --fid the
Frechet Inception distance of the `--num` outputs against `--num` other held-out images (a small
sample: biased upward and noisy; compare numbers of the same sample size only), and of the clean
targets themselves (the floor at that sample size).
"""

import argparse
import json
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import degradations as degradations_lib
from gan_jax import encoder as encoder_lib
from gan_jax.data import pipeline
from gan_jax.images import to_uint8
from gan_jax.metrics import frechet
from gan_jax.metrics import inception
from gan_jax.tools import perceptual
from gan_jax.tools import projector


def held_out(config, split: str, num: int, batch: int = 0, label: Optional[int] = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, H, W, C) in [-1, 1], labels (N,)): `num` images of `split` in the seed-0 order
  of the input pipeline from its batch 10 * `batch` of 256 (batch 0 and 1: disjoint sets of up to
  2560 images), only of class `label` when given."""
  data_config = config.data.copy_and_resolve_references()
  data_config.split = split
  images, labels, step = [], [], batch * 10
  with pipeline.InputPipeline(data_config, 256, seed=0) as data:
    while sum(len(x) for x in images) < num:
      b = data.batch_at(step)
      keep = np.ones(len(b['label']), bool) if label is None else b['label'] == label
      images.append(b['image'][keep])
      labels.append(b['label'][keep])
      step += 1
  return (np.concatenate(images)[:num].astype(np.float32),
          np.concatenate(labels)[:num].astype(np.int64))


def quality(outputs: np.ndarray, targets: np.ndarray, params) -> dict:
  """Mean PSNR, MSE and Inception distance of outputs to targets."""
  mse = np.mean(np.square(outputs - targets), axis=(1, 2, 3))
  taps = jax.jit(lambda x: perceptual.inception_taps(params, x))
  dist = []
  for i in range(0, len(outputs), 16):
    dist.append(np.asarray(perceptual.tap_distance(taps(jnp.asarray(outputs[i:i + 16])),
                                                   taps(jnp.asarray(targets[i:i + 16])))))
  return {'psnr_db': float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-12)))),
          'mse': float(mse.mean()), 'inception_distance': float(np.concatenate(dist).mean())}


def fid(a: np.ndarray, b: np.ndarray, params) -> float:
  fa, fb = (inception.inception_features(to_uint8(x), params) for x in (a, b))
  return frechet.frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0),
                                  np.cov(fb, rowvar=False))


def encoder_seconds(e: encoder_lib.LoadedEncoder, inputs: np.ndarray, repeats: int = 20) -> float:
  """Seconds per image of E then G at batch 1 (compiled first)."""
  e.generator.synthesis(e(inputs[:1]))
  t0 = time.time()
  for i in range(repeats):
    e.generator.synthesis(e(inputs[i % len(inputs):][:1]))
  return (time.time() - t0) / repeats


def project_all(e: encoder_lib.LoadedEncoder, targets: np.ndarray, inputs: np.ndarray,
                labels: np.ndarray, steps: int) -> tuple[Optional[np.ndarray], float]:
  """(projections, seconds per image) of the projector on the run's task, or (None, 0) where it
  has no counterpart (edges, class translation). A conditional G's projection starts from the
  mean w of the image's own class (the projector's --class)."""
  kinds = {d.kind for d in e.degradations}
  if kinds & {'edges', 'class'}:
    return None, 0.0
  k = int(np.prod([d.factor for d in e.degradations if d.kind == 'down']))
  g, cfg = e.generator, projector.ProjectorConfig(num_steps=steps, downsample=k)
  distance = perceptual.Distance('pixel')
  out, seconds = [], []
  for i in range(len(targets)):
    target = np.asarray(perceptual.box_downscale(jnp.asarray(targets[i:i + 1]), k))
    mask = None
    if 'mask' in kinds:  # known where the masked input still equals the clean image
      mask = (np.abs(inputs[i:i + 1] - targets[i:i + 1]).max(-1, keepdims=True) < 1e-6)
      mask = mask.astype(np.float32)
    t0 = time.time()
    class_idx = int(labels[i]) if g.c_dim else None
    p = projector.project(g, target, mask, cfg, distance, class_idx=class_idx)
    seconds.append(time.time() - t0)
    out.append(projector.render(g, p.ws[-1:], p.noise))
  return np.concatenate(out), float(np.mean(seconds[1:] if len(seconds) > 1 else seconds))


def bicubic(targets: np.ndarray, k: int) -> np.ndarray:
  small = perceptual.box_downscale(jnp.asarray(targets), k)
  n, h, w, c = targets.shape
  return np.clip(np.asarray(jax.image.resize(small, (n, h, w, c), 'bicubic')), -1, 1)


def evaluate(workdir: str, num: int = 200, split: str = 'test', projector_num: int = 10,
             projector_steps: int = 200, with_fid: bool = False) -> dict:
  e = encoder_lib.load_encoder(workdir)
  params = inception.load_params()
  result = {'workdir': workdir, 'encoder_run': e.source, 'task': e.config.encoder.degradations or
            'invert', 'split': split, 'num': num}
  pair = degradations_lib.class_pair(e.degradations)
  if pair is not None:
    inputs, _ = held_out(e.config, split, num, label=pair.source)
    outputs = e.reconstruct(inputs)
    result['encoder_sec_per_image'] = encoder_seconds(e, inputs)
    reference, _ = held_out(e.config, split, num, label=pair.target)
    result['fid_outputs_vs_class_b'] = fid(outputs, reference, params)
    result['fid_inputs_vs_class_b'] = fid(inputs, reference, params)
    g = e.generator  # the generator's own class-B samples: what its outputs can reach at best
    z = np.random.RandomState(0).randn(num, g.z_dim)
    result['fid_generated_class_b_vs_class_b'] = fid(g(z, np.full(num, pair.target)), reference,
                                                     params)
    result['fid_class_b_vs_class_b'] = fid(held_out(e.config, split, num, 1, pair.target)[0],
                                          reference, params)
    return result
  targets, labels = held_out(e.config, split, num)
  inputs = e.degrade(targets, seed=0)
  outputs = e.reconstruct(inputs)
  result['encoder'] = quality(outputs, targets, params)
  result['encoder_sec_per_image'] = encoder_seconds(e, inputs)
  result['untrained_start'] = quality(np.broadcast_to(e.generator.synthesis(
      e.generator.w_avg[None, None].repeat(e.num_ws, 1)), targets.shape), targets, params)
  projections, seconds = project_all(e, targets[:projector_num], inputs[:projector_num],
                                     labels[:projector_num], projector_steps)
  if projections is not None:
    result['projector'] = quality(projections, targets[:projector_num], params)
    result['encoder_on_projector_images'] = quality(outputs[:projector_num],
                                                    targets[:projector_num], params)
    result.update(projector_sec_per_image=seconds, projector_num=projector_num,
                  projector_steps=projector_steps)
  k = int(np.prod([d.factor for d in e.degradations if d.kind == 'down']))
  if k > 1 and len(e.degradations) == 1:
    result['bicubic'] = quality(bicubic(targets, k), targets, params)
  if with_fid:
    reference, _ = held_out(e.config, split, num, batch=1)
    result['fid_outputs'] = fid(outputs, reference, params)
    result['fid_targets'] = fid(targets, reference, params)
    if 'bicubic' in result:
      result['fid_bicubic'] = fid(bicubic(targets, k), reference, params)
  return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m gan_jax.encoder_eval', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help="an encoder run's workdir")
  parser.add_argument('--num', type=int, default=200, help='held-out images')
  parser.add_argument('--split', default='test')
  parser.add_argument('--projector_num', type=int, default=10)
  parser.add_argument('--projector_steps', type=int, default=200)
  parser.add_argument('--fid', action='store_true', help='small-sample FID of --num images')
  parser.add_argument('--out', default=None, help='write the results as JSON here')
  args = parser.parse_args(argv)
  result = evaluate(args.workdir, args.num, args.split, args.projector_num, args.projector_steps,
                    args.fid)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  return result


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)
