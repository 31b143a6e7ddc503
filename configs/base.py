"""Fields shared by every experiment config; the other configs import and adjust them.

Every config has: model.name, dataset, batch_size (global), num_train_steps (> 0 overrides
num_epochs), num_epochs, seed, log_every_steps, eval_every_steps, checkpoint_every_steps,
dtype. Set `eval_only=True` to evaluate the latest checkpoint in --workdir and stop.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'attention56'
  # Optional architecture overrides (None keeps the preset's value).
  config.model.stem_width = placeholder(int)
  config.model.stage_widths = placeholder(tuple)
  config.model.final_width = placeholder(int)
  config.model.modules_per_stage = placeholder(tuple)
  config.model.mask_poolings = placeholder(tuple)
  config.model.p = placeholder(int)
  config.model.t = placeholder(int)
  config.model.r = placeholder(int)
  config.model.groups = placeholder(int)
  config.model.attention = placeholder(str)
  config.model.mask_activation = placeholder(str)

  config.dataset = 'imagenet2012'
  config.data_dir = placeholder(str)  # TFDS data directory (default: ~/tensorflow_datasets)
  config.image_size = 224
  config.eval_image_size = 224
  config.shuffle_buffer = 16_384
  config.prefetch_to_device = 2

  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_train_steps = -1
  config.num_epochs = 90.0
  config.seed = 0
  config.dtype = 'float32'

  # SGD with Nesterov momentum; lr is scaled by batch_size / lr_reference_batch_size.
  config.learning_rate = 0.1
  config.lr_reference_batch_size = 256
  config.schedule = 'piecewise'  # or 'cosine'
  config.lr_boundaries = (200_000, 400_000, 500_000)
  config.lr_decay_factor = 0.1
  config.warmup_steps = 0
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.weight_decay_bn_and_bias = True  # as in the original Caffe training
  config.label_smoothing = 0.0

  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 3
  config.eval_only = False
  config.profile = False
  return config
