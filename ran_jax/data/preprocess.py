"""Per-example tf.data preprocessing: ImageNet, CIFAR and digits recipes.

Training augmentation uses stateless random ops seeded per example, so the same seed and
step always give the same images: a resumed run sees exactly the data it would have seen.
The pixels leave the host unnormalised (uint8 where they are whole numbers); the devices
normalise them (`ran_jax.data.normalize`).
"""

from ran_jax.data.quiet_tf import tf

CROP_PADDING = 32  # eval: resize so the centre crop is image_size / (image_size + 32) of it


def to_levels(image: tf.Tensor) -> tf.Tensor:
  """A resize's float32 output rounded to the nearest of the 256 levels, as uint8."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resized(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """An image of any size bilinearly resized to image_size x image_size, as uint8 levels."""
  return to_levels(tf.image.resize(image, (image_size, image_size), method='bilinear'))


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
  return to_levels(image)


def eval_window(height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
  """The evaluation crop (top, left, height, width) of a `height` x `width` image.

  A centred square of image_size / (image_size + 32) of the shorter side.
  """
  crop = tf.cast(image_size / (image_size + CROP_PADDING) *
                 tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])


def imagenet_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
  """Centre crop of image_size / (image_size + 32) of the shorter side, decoded directly,
  resized bilinearly and rounded to uint8 (as `imagenet_train`'s crops)."""
  shape = tf.io.extract_jpeg_shape(image_bytes)
  window = eval_window(shape[0], shape[1], image_size)
  image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  return to_levels(tf.image.resize(image, (image_size, image_size), method='bilinear'))


def imagenet_eval_decoded(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """`imagenet_eval` of an already decoded (H, W, C) image: the same crop and resize."""
  shape = tf.shape(image)
  window = eval_window(shape[0], shape[1], image_size)
  image = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])
  return to_levels(tf.image.resize(image, (image_size, image_size), method='bilinear'))


def small_eval_decoded(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """A decoded image for a 'small'-recipe network, whose images are used at their own size:
  float32, bilinearly resized to image_size x image_size when its size differs."""
  if tuple(image.shape[:2]) == (image_size, image_size):
    return tf.cast(image, tf.float32)
  return tf.image.resize(image, (image_size, image_size), method='bilinear')


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int, flip: bool
                  ) -> tuple[tf.Tensor, tf.Tensor]:
  """Zero-pads `pad` pixels, takes a random crop of the original size, optionally flips.

  Returns the image (same dtype) and its crop (top, left, flipped) as int32, which the device
  needs to line the mean image up with it.
  """
  crop_seed, flip_seed = _two_seeds(seed)
  height, width, channels = image.shape
  # The draws of tf.image.stateless_random_crop, so the same seed gives the same crop.
  offset = tf.random.stateless_uniform([3], crop_seed, maxval=tf.int32.max,
                                       dtype=tf.int32)[:2] % (2 * pad + 1)
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.slice(image, [offset[0], offset[1], 0], [height, width, channels])
  flipped = tf.constant(False)
  if flip:
    flipped = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flipped, lambda: tf.reverse(image, axis=[1]), lambda: image)
  return image, tf.stack([offset[0], offset[1], tf.cast(flipped, tf.int32)])


def centre_crop(pad: int) -> tf.Tensor:
  """The crop record of an unaugmented image (the centre of the padded image, not flipped)."""
  return tf.constant([pad, pad, 0], tf.int32)
