"""DETR on the synthetic shapes boxes: a ResNet-18 at 1/4 width, d=64, 3/3 layers, 12 queries.

The transformer reads C3 (stride 8: 8x8 tokens on 64 px images); at C5 a 64 px image is
2x2 tokens and, in a first run, classification stayed at the class prior after 850 steps.

Queries are reference points with SMCA's Gaussian cross-attention prior
(``query_type='anchor'``, ``spatial_prior=True``): with DETR's free query embeddings,
trained from scratch here, the class loss stayed at the prior level (box AP50 0.034 after
1000 steps, 0.059 after 3000) while the anchored queries reached 0.18 after 1500 steps
and 0.50 after 2000 of this 6000-step schedule (README). ``--config.model.query_type=learned
--config.model.spatial_prior=False`` gives the original DETR.

The DETR recipe otherwise (AdamW, gradient clip 0.1, set loss weights 1/5/2 with no-object
weight 0.1) at toy scale with a 10x higher learning rate (1e-3, backbone included: it is
trained from scratch); ``runlocal`` shrinks it to a smoke test.
Run: ``python -m experiments.train --config=detr_shapes --workdir=/tmp/seg_jax/detr_shapes``.

``learned``: the original DETR's free object queries (``query_type='learned'``, no prior),
with the backbone and input projection initialised from a trained ``detr_shapes`` run
(``--config.init_weights``, default ``/tmp/seg_jax/detr_shapes``; ``init_weights_scopes``);
the transformer, the query embeddings and the heads start from scratch. From scratch the
free queries stayed at the class prior; this way they reached box AP50 0.82 (README).

``masks``: DETR's segmentation head trained the paper's way, in a second stage on a frozen
detector. The detector run (``--config.init_weights``, default ``/tmp/seg_jax/detr_shapes``)
gives every parameter but the segmentation head's (``bbox_attention/``, ``mask_head/``); those
get learning rate 0 (``optax.set_to_zero``) and the backbone's BatchNorm is frozen at the
detector's statistics (``frozen_bn``; the trained BN layers are moved into frozen ones), so the
boxes, classes and matching stay exactly the detector's while the mask head learns (focal +
dice on the matched queries). Score with ``python -m experiments.evaluate_coco`` (segm AP).
"""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  # data.task='instances'; loss: DETR's weights (1/5/2, no-object 0.1, auxiliary losses)
  config = shapes_base.base_config("shapes", task="detection")
  config.data.max_instances = 8
  config.data.augmentation = {"scale_range": (0.75, 1.25), "flip": True, "crop": True}
  config.model = ml_collections.ConfigDict({
      "name": "detr", "num_classes": 4, "num_queries": 12, "d_model": 64, "num_heads": 4,
      "num_encoder_layers": 3, "num_decoder_layers": 3, "dim_feedforward": 256,
      "dropout": 0.0, "backbone_depth": 18, "backbone_width": 0.25, "frozen_bn": False,
      "feature_level": "c3", "with_masks": False, "query_type": "anchor",
      "spatial_prior": True})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 0.1
  config.optimizer.lr_multipliers = {"^backbone/": 1.0}
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 200
  config.batch_size = 32
  config.num_train_steps = 6000
  config.eval_every = 2000
  config.checkpoint_every = 1000
  config.eval_score_bins = 1000
  options = shapes_base.parse_arg(arg)
  unknown = options - {"masks", "learned", "runlocal"}
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)} for detr_shapes; "
                     "known: learned, masks, runlocal")
  detector_run = shapes_base.run_dir("detr_shapes", "runlocal" in options)
  if "learned" in options:
    # The paper's free object queries (no reference points, no attention prior), with the
    # backbone and its input projection from a trained detr_shapes run; the transformer,
    # the queries and the heads start from scratch.
    config.model.query_type = "learned"
    config.model.spatial_prior = False
    config.init_weights = detector_run
    config.init_weights_scopes = ("backbone", "input_proj")
    config.eval_every = 1500
  if "masks" in options:
    config.model.with_masks = True
    config.model.frozen_bn = True
    config.init_weights = detector_run
    # Everything but the segmentation head is frozen: the detector's boxes and matching stay fixed.
    config.optimizer.lr_multipliers = {"^(?!mask_head/|bbox_attention/)": 0.0}
    config.schedule.warmup_steps = 100
    config.batch_size = 16
    config.num_train_steps = 1500
    config.eval_every = 0
    config.checkpoint_every = 500
  config = shapes_base.finish(config, ",".join(sorted(options - {"masks", "learned"})))
  if "runlocal" in options:
    config.model.update({"num_encoder_layers": 1, "num_decoder_layers": 2, "d_model": 32,
                         "dim_feedforward": 64, "num_queries": 6, "backbone_width": 0.125})
  return config
