"""Fields shared by every experiment config; the other configs import and adjust them.

Every config has: model.name, dataset, batch_size (global), num_epochs, seed,
log_every_steps, eval_every_steps, checkpoint_every_steps, dtype. The length, the decays and
the warm-up of the learning-rate schedule are in epochs (passes over the whole train split),
so a different batch size trains on the same examples with the same schedule per example;
`num_train_steps` > 0 overrides the length in steps (quick runs). Set `eval_only=True` to
evaluate the latest checkpoint in --workdir and stop. The defaults are the paper's ImageNet
training; `ran_jax.experiments.checks` checks every field before a run starts.
"""

from collections.abc import Mapping

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def epochs(iterations: int, batch_size: int, num_train_examples: int) -> float:
  """`iterations` steps of `batch_size` examples, in passes over `num_train_examples`."""
  return iterations * batch_size / num_train_examples


def set_schedule_from_iterations(config: ml_collections.ConfigDict, *, batch_size: int,
                                 decays: tuple[int, ...], stop: int,
                                 num_train_examples: int) -> None:
  """Sets `num_epochs` and `lr_decay_epochs` from a schedule given in iterations at a batch."""
  config.num_epochs = epochs(stop, batch_size, num_train_examples)
  config.lr_decay_epochs = tuple(epochs(i, batch_size, num_train_examples) for i in decays)


def variant_parts(variant: str, variants: Mapping[str, str], config_file: str) -> list[str]:
  """The comma-separated parts of `variant`, after checking it is one of `variants`.

  A config with variants is selected as --config=configs/FILE.py:VARIANT; an unknown variant
  raises a ValueError listing the valid ones.
  """
  if variant not in variants:
    raise ValueError(f'unknown variant {variant!r} of {config_file}; choose one of '
                     f'{", ".join(variants)} (as --config={config_file}:VARIANT)')
  return variant.split(',')


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
  config.model.mask_structure = placeholder(str)
  # Rematerialisation: 'none', 'unit' or 'module', keeping 'nothing' or 'conv_outputs'
  # (see ResidualAttentionNetwork); less activation memory for about a third more compute.
  config.model.remat = 'none'
  config.model.remat_policy = 'nothing'
  # Run each run of identical modules and units as one nn.scan loop: the same network,
  # compiled in a fraction of the time when it is deep; variables stacked per run (a run
  # trained in either layout is read by the other: predict, visualize and resumes convert).
  config.model.scan = False

  config.dataset = 'imagenet2012'
  config.data_dir = placeholder(str)  # TFDS data directory (default: ~/tensorflow_datasets)
  config.image_size = 224
  config.eval_image_size = 224
  config.shuffle_buffer = 16_384
  config.prefetch_to_device = 2
  # Symmetric label noise: this fraction of the training labels (chosen by example id and
  # label_noise_seed, the same on every host and after a resume) is replaced by a uniformly
  # drawn other class. Evaluation labels stay clean.
  config.label_noise = 0.0
  config.label_noise_seed = 0

  config.batch_size = 256
  config.eval_batch_size = 256
  # Gradient accumulation: each update is the mean gradient of this many micro-batches of
  # batch_size / grad_accum_steps, run one after the other in one compiled step (the memory of
  # one micro-batch). BatchNorm then normalises each micro-batch by its own statistics (over
  # batch_size / grad_accum_steps examples, all devices together), as the paper's multi-GPU
  # Caffe training normalised each GPU's share; the schedule still counts updates of batch_size.
  config.grad_accum_steps = 1
  # The paper's ImageNet schedule: batch 256, lr / 10 at 200k, 400k and 500k iterations, stop at
  # 530k. Sets num_epochs (105.9) and lr_decay_epochs (39.96, 79.93, 99.91).
  set_schedule_from_iterations(config, batch_size=256, decays=(200_000, 400_000, 500_000),
                               stop=530_000, num_train_examples=IMAGENET_TRAIN_EXAMPLES)
  config.num_train_steps = -1  # > 0: train this many steps instead of num_epochs
  config.seed = 0
  config.dtype = 'float32'

  # SGD with Nesterov momentum; lr is scaled by batch_size / lr_reference_batch_size.
  config.learning_rate = 0.1
  config.lr_reference_batch_size = 256
  config.schedule = 'piecewise'  # or 'cosine' (to 0 at the last step)
  config.lr_decay_factor = 0.1  # piecewise: lr is multiplied by it at each of lr_decay_epochs
  config.warmup_epochs = 0.0  # linear warm-up from 0
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.weight_decay_bn_and_bias = True  # as in the original Caffe training
  config.label_smoothing = 0.0
  # An exponential moving average of the parameters and BatchNorm statistics, updated after
  # each step (average = decay * average + (1 - decay) * weights; e.g. 0.999). Evaluated
  # beside the weights (ema_* in eval_results.json), and the one predict, visualize and export
  # use (their --noema: the weights). Unset: none kept.
  config.ema_decay = placeholder(float)

  # Fine-tuning: start from the latest checkpoint of another run's work directory (any
  # dataset): every variable whose path and shape match is loaded, the others (the classifier,
  # when the classes differ) are initialised afresh. freeze='backbone' freezes the parameters of
  # all but the classifier (BatchNorm statistics still follow the data); init_lr_scale
  # multiplies the learning rate of the loaded parameters.
  config.init_from = placeholder(str)
  config.freeze = 'none'
  config.init_lr_scale = 1.0

  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 3
  # Each evaluation also writes the soft masks of this many fixed eval images to TensorBoard
  # (0: none).
  config.attention_images = 4
  config.eval_only = False
  config.profile = False
  return config
