"""``base_config()``: every config field the training loop and the tasks read, with its default.

The loop, the optimizer, the tasks and ``seg_jax.predict`` read fields directly
(``config.keep_checkpoints``, ``config.optimizer.b1``), so a config lacking one fails with
ml_collections' error naming it instead of running on a value guessed in code. Start from
``base_config(data_name, task)`` and change what your experiment needs; the experiment
configs (``experiments/configs``) do the same.

The values are the library defaults: plain SGD at a constant learning rate, evaluation only
at the end, a checkpoint at the end, the last 3 kept. The ``model`` section holds the
model's constructor arguments (its defaults are the model's own dataclass fields); ``data``
is ``seg_jax.data.config.default_data_config(data_name)``; ``loss`` depends on the task.
"""

from __future__ import annotations

import ml_collections

from seg_jax.data.config import default_data_config

TASKS = ("semantic", "classification", "instance", "detection")
# The model a task's base config names (any model of the task can replace it).
DEFAULT_MODELS = {"semantic": "unet", "classification": "vgg16", "instance": "mask_rcnn",
                  "detection": "detr"}


def loss_config(task: str) -> ml_collections.ConfigDict:
  """The ``loss`` section ``task`` reads, with the defaults of its loss function."""
  if task in ("semantic", "classification"):  # classification reads none of it
    return ml_collections.ConfigDict({
        # Per-class weights of the pixel cross-entropy (None: all 1).
        "class_weights": ml_collections.FieldReference(None, field_type=list),
        # 'mean' over valid pixels, or 'sum' per image (Caffe normalize: false).
        "reduction": "mean"})
  if task == "instance":  # Mask R-CNN: smooth-L1 beta of both box losses (torchvision 1/9)
    return ml_collections.ConfigDict({
        "smooth_l1_beta": 1.0 / 9, "loss_objectness": 1.0, "loss_rpn_box": 1.0,
        "loss_classifier": 1.0, "loss_box": 1.0, "loss_mask": 1.0})
  if task == "detection":  # DETR (the paper's weights; they are the matching costs too)
    return ml_collections.ConfigDict({
        "eos_coef": 0.1, "class_weight": 1.0, "bbox_weight": 5.0, "giou_weight": 2.0,
        "mask_weight": 1.0, "dice_weight": 1.0, "aux_loss": True})
  raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def base_config(data_name: str = "shapes", task: str = "semantic") -> ml_collections.ConfigDict:
  """Every field the loop reads for ``task`` on dataset ``data_name``, at its default."""
  loss = loss_config(task)  # checks the task name
  config = ml_collections.ConfigDict()
  config.task = task
  config.model = ml_collections.ConfigDict({"name": DEFAULT_MODELS[task]})
  config.data = default_data_config(
      data_name, task="instances" if task in ("instance", "detection") else "semantic")
  config.loss = loss
  # Classification task only: 'single' (which shape) or 'presence' (multi-label).
  config.classification = ml_collections.ConfigDict({"target": "single"})
  config.optimizer = ml_collections.ConfigDict({
      "name": "sgd",  # 'sgd' | 'momentum' | 'adam' | 'adamw' (see seg_jax.training.optim)
      "learning_rate": 1e-3,
      "momentum": 0.0,  # sgd/momentum; 0: plain SGD ('momentum' needs it > 0)
      "nesterov": False,
      "b1": 0.9, "b2": 0.999, "eps": 1e-8,  # adam/adamw
      "weight_decay": 0.0,
      "decay_all": False,  # False: no decay on biases and norm parameters (ndim <= 1)
      "grad_clip_norm": 0.0,  # clip by global norm; 0: off
      "lr_multipliers": {},  # {path regex: multiplier}; first match wins, 0 freezes
  })
  config.schedule = ml_collections.ConfigDict({
      "name": "constant",  # 'constant' | 'cosine' | 'warmup_cosine' | 'poly' | 'steps'
      "warmup_steps": 0,
      "end_value": 0.0,  # fraction of the base rate at the end (cosine, poly)
      "power": 0.9,  # poly
      "boundaries": (),  # steps: absolute steps where the rate is multiplied ...
      "decay_factor": 0.1,  # ... by this
  })
  config.batch_size = 16  # global, over all devices and processes
  config.num_train_steps = 1000
  config.seed = 0
  config.log_every = 50
  config.eval_every = 0  # 0: evaluate only at the end
  config.checkpoint_every = 0  # 0: checkpoint only at the end (and when preempted)
  config.keep_checkpoints = 3
  config.num_overlays = 4  # eval images drawn into overlays/ (0: none)
  config.eval_score_bins = 1000  # instance/detection: score histogram bins of the AP
  config.parallelism = "jit"  # or 'pmap'
  config.dtype = "float32"  # compute dtype ('bfloat16', 'float16'); parameters stay float32
  # A weights file or another run's directory (see seg_jax.training.init_weights); with a
  # run, init_weights_scopes limits the copy to those top-level layers (None: every layer
  # whose path and shape match).
  config.init_weights = ml_collections.FieldReference(None, field_type=str)
  config.init_weights_scopes = ml_collections.FieldReference(None, field_type=tuple)
  # Multi-process runs (None: $SEG_JAX_COORDINATOR_ADDRESS etc., or a single process).
  config.distributed = ml_collections.ConfigDict({
      "coordinator_address": ml_collections.FieldReference(None, field_type=str),
      "num_processes": ml_collections.FieldReference(None, field_type=int),
      "process_id": ml_collections.FieldReference(None, field_type=int)})
  return config
