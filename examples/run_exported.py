"""Classifies images with a network written by `python -m ran_jax.export`, importing only JAX
and NumPy (no ran_jax, Flax or TensorFlow; `pip install jax numpy flatbuffers` is all it needs:
JAX reads serialised functions with flatbuffers):

    python3 examples/run_exported.py EXPORT_DIR IMAGES.npy

IMAGES.npy: uint8 images (N, S, S, C) at the network's input size (model.json's `input`).
Prints the five most probable classes of each image.
"""
import json
import sys

import numpy as np
from jax import export

directory, images = sys.argv[1], np.load(sys.argv[2])
infer = export.deserialize(bytearray(open(f'{directory}/inference.jax', 'rb').read()))
names = json.load(open(f'{directory}/model.json', encoding='utf-8'))['class_names']
outputs = infer.call(images)  # with --masks: (probabilities, masks)
for row in np.asarray(outputs[0] if isinstance(outputs, tuple) else outputs):
  print(', '.join(f'{names[i]} {row[i]:.6f}' for i in np.argsort(-row, kind='stable')[:5]))
