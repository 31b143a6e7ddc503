"""The network an experiment config names: its preset and the fields that override it."""

from typing import Any

import ml_collections

from ran_jax.models import ResidualAttentionNetwork, create_model


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The set fields of `config.model` other than `name`: they override the preset's."""
  return {key: value for key, value in config.model.items()
          if key != 'name' and value is not None}


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> ResidualAttentionNetwork:
  """The network named by `config.model.name`; its other set fields override the preset."""
  return create_model(config.model.name, num_classes=num_classes, dtype=config.dtype,
                      **model_overrides(config))
