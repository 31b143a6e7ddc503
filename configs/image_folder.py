"""Your own images: a folder with one subfolder per class.

Command (from the repository root):
  python -m ran_jax.main --config=configs/image_folder.py --config.folder=DIR --workdir=W

DIR holds DIR/<class>/*.jpg (.png, ...: any file Pillow reads), or is already split as
DIR/train/<class>/ and DIR/val/<class>/ (or validation/, test/). Without a split,
`val_fraction` of each class (at least one image) is held out for validation, chosen by
`split_seed`: the same on every host and every rerun. The images are prepared once as a TFDS
dataset in data_dir (~/tensorflow_datasets/folder_images/ by default); a folder that changed is
prepared again. Class names are the folder names, sorted; they are saved with the run
(W/run.json), so predict and visualize --image need W, not DIR (visualize --num_examples
reads the folder's eval images: give --config.folder too).

Defaults from the data (see ran_jax/data/image_folder.py):
  - recipe 'auto': 'small' (as CIFAR: attention56_cifar, images resized to the median shorter
    side, 1/8 zero-pad random crops and flips) when the median shorter side is at most 64
    pixels; else 'imagenet' (attention56 on 224-pixel random-resized crops).
    --config.image_size, --config.model.name and --config.recipe override them
    (--config.image_layout, the former name of --config.recipe, still works).
  - normalisation: per-channel mean and std of the training images.
Training: batch 32, lr 0.05 (0.1 at batch 64) with a linear warm-up over 2 epochs and cosine
decay over 30 epochs, weight decay 5e-4: a few hundred small images train to a useful model
on 2 CPU cores in minutes (the README gives a measured run).

Fine-tuning (any config): --config.init_from=OTHER_WORKDIR starts from that run's latest
checkpoint; --config.freeze=backbone trains the classifier only; --config.init_lr_scale=0.1
lowers the learning rate of the loaded parameters.
"""

from ml_collections.config_dict import placeholder

from configs import base

PAPER_RESULT = 'not in the paper (your own data)'


def get_config():
  config = base.get_config()
  config.dataset = 'image_folder'
  config.folder = placeholder(str)  # required: the directory of class folders
  config.val_fraction = 0.1
  config.split_seed = 0
  config.recipe = 'auto'  # the input recipe: 'small', 'imagenet', or from the images
  config.image_layout = placeholder(str)  # the former name of `recipe`, still read
  config.flip = True  # horizontal flips in training (the 'small' recipe)
  config.model.name = placeholder(str)  # from the recipe: attention56_cifar or attention56
  config.image_size = placeholder(int)  # from the images (see the docstring)
  config.eval_image_size = placeholder(int)  # image_size
  config.batch_size = 32
  config.eval_batch_size = 64
  config.learning_rate = 0.1
  config.lr_reference_batch_size = 64
  config.schedule = 'cosine'
  config.num_epochs = 30.0
  config.warmup_epochs = 2.0
  config.lr_decay_epochs = ()
  config.weight_decay = 5e-4
  config.shuffle_buffer = 10_000
  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  return config
