"""Flax linen modules of the Residual Attention Network family (no TensorFlow needed).

    from ran_jax.models import create_model, list_models
    model = create_model('attention56', num_classes=1000)
    variables = model.init(jax.random.key(0), images, train=False)
    logits = model.apply(variables, images, train=False)

    model, variables, preprocess = load('exported/')   # a run written by python -m ran_jax.export
"""

from ran_jax.models.attention import AttentionModule, SoftMaskBranch, TrunkBranch
from ran_jax.models.exported import ExportError, load
from ran_jax.models.layers import caffe_max_pool, interp_like
from ran_jax.models.network import ResidualAttentionNetwork
from ran_jax.models.presets import PRESETS, create_model, list_models
from ran_jax.models.summary import activation_bytes_per_image, count_params, model_costs
from ran_jax.models.units import PreActBottleneck, PreActInception, ResNeXtBottleneck

__all__ = [
    'AttentionModule', 'ExportError', 'PRESETS', 'PreActBottleneck', 'PreActInception',
    'ResNeXtBottleneck', 'ResidualAttentionNetwork', 'SoftMaskBranch', 'TrunkBranch', 'activation_bytes_per_image',
    'caffe_max_pool', 'count_params', 'create_model', 'interp_like', 'list_models', 'load',
    'model_costs',
]
