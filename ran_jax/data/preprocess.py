"""Per-example tf.data preprocessing: ImageNet, CIFAR and digits recipes.

Training augmentation uses stateless random ops seeded per example, so the same seed and
step always give the same images: a resumed run sees exactly the data it would have seen.
"""

import tensorflow as tf

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_PADDING = 32  # eval: resize so the centre crop is image_size / (image_size + 32) of it


def _two_seeds(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  return seeds[0], seeds[1]


def imagenet_train(image_bytes: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
  """Random-resized crop (area 8%-100%, aspect 3/4-4/3) decoded directly, resize, flip."""
  crop_seed, flip_seed = _two_seeds(seed)
  shape = tf.io.extract_jpeg_shape(image_bytes)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)), seed=crop_seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  image = tf.image.resize(image, (image_size, image_size), method='bilinear')
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return _normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
  """Centre crop of image_size / (image_size + 32) of the shorter side, decoded directly."""
  shape = tf.io.extract_jpeg_shape(image_bytes)
  height, width = shape[0], shape[1]
  crop = tf.cast(image_size / (image_size + CROP_PADDING) *
                 tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  window = tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  image = tf.image.resize(image, (image_size, image_size), method='bilinear')
  return _normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def _normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int, flip: bool) -> tf.Tensor:
  """Zero-pads `pad` pixels, takes a random crop of the original size, optionally flips."""
  crop_seed, flip_seed = _two_seeds(seed)
  height, width, channels = image.shape
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(image, (height, width, channels), crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def subtract_mean(image: tf.Tensor, mean_image: tf.Tensor) -> tf.Tensor:
  """Per-pixel mean subtraction on [0, 1] images (`mean_image` of the training split)."""
  return tf.cast(image, tf.float32) / 255.0 - mean_image
