"""The synthetic ``shapes`` dataset: rasterisation, determinism, consistency, TFDS builder."""

import numpy as np
import pytest

from seg_jax.data import shapes


def _polygon_reference(vertices, size):
  """Even-odd point-in-polygon test at pixel centres, one pixel at a time (brute force)."""
  out = np.zeros((size, size), bool)
  n = len(vertices)
  for i in range(size):
    for j in range(size):
      py, px = i + 0.5, j + 0.5
      inside = False
      for k in range(n):
        (x1, y1), (x2, y2) = vertices[k], vertices[(k + 1) % n]
        if (y1 > py) != (y2 > py):
          x_cross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
          if px < x_cross:
            inside = not inside
      out[i, j] = inside
  return out


def _reference_mask(kind, size, cy, cx, radius, angle):
  if kind == 0:
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (i + 0.5 - cy) ** 2 + (j + 0.5 - cx) ** 2 <= radius ** 2
  if kind in (1, 2):
    sides = 4 if kind == 1 else 3
    angles = angle + 2 * np.pi * np.arange(sides) / sides
    radii = np.full(sides, radius)
  else:  # star: alternate outer and inner vertices
    angles = angle + np.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
  vertices = list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))
  return _polygon_reference(vertices, size)


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_shape_mask_matches_polygon_reference(kind):
  rng = np.random.default_rng(kind)
  for _ in range(3):
    radius = rng.uniform(4, 10)
    cy, cx = rng.uniform(radius, 24 - radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    got = shapes.shape_mask(kind, 24, cy, cx, radius, angle)
    want = _reference_mask(kind, 24, cy, cx, radius, angle)
    assert got.any()
    assert np.sum(got != want) <= 1  # a centre exactly on an edge may go either way


def test_render_is_deterministic_and_index_dependent():
  a, b = shapes.render_example(3), shapes.render_example(3)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  c = shapes.render_example(4)
  assert not np.array_equal(a["image"], c["image"])
  v = shapes.render_example(3, split="validation")
  assert not np.array_equal(a["image"], v["image"])


def test_render_consistency():
  seen = set()
  for index in range(40):
    ex = shapes.render_example(index, image_size=48, min_size=8, max_size=24)
    masks, labels, boxes, seg = ex["masks"], ex["labels"], ex["boxes"], ex["segmentation"]
    assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype == np.uint8
    assert 1 <= len(labels) <= 4 and masks.shape == (len(labels), 48, 48)
    assert np.all(masks.sum(axis=0) <= 1), "visible masks must not overlap"
    union = np.zeros_like(seg)
    for mask, label, box in zip(masks, labels, boxes):
      assert mask.any(), "fully occluded shapes must be dropped"
      union[mask] = label + 1
      rows, cols = np.where(mask)
      np.testing.assert_array_equal(box, [cols.min(), rows.min(), cols.max() + 1,
                                          rows.max() + 1])
    np.testing.assert_array_equal(seg, union)
    seen.update(labels.tolist())
  assert seen == {0, 1, 2, 3}


def test_render_rejects_bad_sizes():
  with pytest.raises(ValueError, match="max_size"):
    shapes.render_example(0, image_size=16, max_size=20)
  with pytest.raises(ValueError, match="split"):
    shapes.render_example(0, split="test")


def test_default_config_is_the_fast_64px_task():
  cfg = shapes.Shapes.builder_configs[shapes.Shapes.DEFAULT_CONFIG_NAME]
  assert (cfg.image_size, cfg.min_size, cfg.max_size) == (64, 12, 28)
  assert (cfg.num_train, cfg.num_validation) == (8000, 256)


def test_builder_prepares_tiny_config(tmp_path):
  import tensorflow_datasets as tfds
  config = shapes.ShapesConfig(name="t6", image_size=32, num_train=6, num_validation=3,
                               min_size=8, max_size=16)
  builder = shapes.Shapes(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 6
  assert builder.info.splits["validation"].num_examples == 3
  assert builder.info.features["objects"]["label"].names == list(shapes.SHAPE_NAMES)
  examples = list(tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False)))
  assert len(examples) == 3
  rendered = [shapes.render_example(i, image_size=32, split="validation", min_size=8,
                                    max_size=16) for i in range(3)]
  # Order in the TFDS file is by hashed key; match examples by their image.
  for ex in examples:
    ref = next(r for r in rendered if np.array_equal(r["image"], ex["image"]))
    np.testing.assert_array_equal(ex["segmentation"][..., 0], ref["segmentation"])
    np.testing.assert_array_equal(ex["objects"]["mask"][..., 0], ref["masks"].astype(np.uint8))
    np.testing.assert_array_equal(ex["objects"]["label"], ref["labels"])
    ymin, xmin, ymax, xmax = ex["objects"]["bbox"].T * 32
    np.testing.assert_allclose(np.stack([xmin, ymin, xmax, ymax], 1), ref["boxes"], atol=1e-4)


def test_single64_is_one_centred_default_sized_shape_per_image():
  cfg = shapes.Shapes.builder_configs["single64"]
  assert (cfg.image_size, cfg.min_size, cfg.max_size) == (64, 12, 28)  # the default's objects
  for index in range(20):
    ex = cfg.render(index, "train")
    assert len(ex["labels"]) == 1
    ys, xs = np.nonzero(ex["masks"][0])
    # Centre within 12 px of the image centre (+1 px for the shape's discretisation).
    assert abs(ys.mean() - 32) <= 13 and abs(xs.mean() - 32) <= 13
