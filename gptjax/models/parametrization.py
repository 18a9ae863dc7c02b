"""How a model's initialisation, learning rates and multipliers scale with its width and depth, so
that hyperparameters tuned on a small model transfer to a large one.

'sp' (standard): every matrix starts at N(0, init_std), one Adam learning rate for all, logits
  x . e and attention q . k / sqrt(K). The optimum learning rate falls as width grows.
'mup' (Yang et al. 2021, "Tensor Programs V", Table 3 for Adam), relative to a base model of width
  base_d_model, with width multiplier m = d_model / base_d_model:
    - hidden matrices (both dimensions grow with width: attention and MLP kernels) start at
      N(0, init_std / sqrt(r)) and get Adam learning rate lr / r, where r is their fan-in's growth
      (m for every hidden matrix of these models);
    - vectors and matrices with one growing dimension (embeddings, position tables, biases,
      LayerNorm, the output layer) keep init_std and lr;
    - the readout is multiplied by 1 / m: logits = (x / m) . e (times mup_output_multiplier, a
      constant of the base model to tune with its learning rate; 1 by default);
    - attention logits are q . k / K (times sqrt(K_base), K_base = base_d_model / n_heads, so the
      base model computes exactly what 'sp' does).
  Weight decay stays lr * weight_decay per step for every parameter: the multipliers act on Adam's
  direction, not on the decay (CompleteP's rule of a constant lr * lambda, Dey et al. 2025).
depth_scaling='completep' (Dey et al. 2025, alpha = 1; Bordelon et al. 2023): each residual
  branch is multiplied by base_n_layers / n_layers, and the residual projections' init no longer
  shrinks with depth (init_std / sqrt(2 base_n_layers) instead of / sqrt(2 n_layers)). With
  alpha = 1 the Adam learning rates do not change with depth. Pre-LN only.

Not done: CompleteP's and u-muP's scaling of Adam's epsilon with width and depth (optax's Adam has
one epsilon); it matters once gradients are as small as eps, far beyond the widths run here.

A parameter's class comes from comparing its shape with the same parameter of the base-width model
(registry.fan_in_ratios), as microsoft/mup's base shapes do, so every architecture and the
scanned layout get the same rules without naming their layers.
"""

import dataclasses
import math

import jax

from gptjax.models.config import ModelConfig


def width_multiplier(cfg: ModelConfig) -> float:
  """m = d_model / base_d_model under 'mup'; 1 otherwise."""
  if cfg.parametrization != 'mup' or not cfg.base_d_model:
    return 1.0
  return cfg.d_model / cfg.base_d_model


def base_width_config(cfg: ModelConfig) -> ModelConfig:
  """The model of width base_d_model (d_ff scaled alike) that the multipliers are relative to."""
  base = cfg.base_d_model or cfg.d_model
  return dataclasses.replace(
    cfg, d_model=base, d_ff=max(1, round(cfg.d_ff * base / cfg.d_model)), base_d_model=base
  )


def attention_temperature(cfg: ModelConfig, head_dim: int) -> float:
  """What q . k is divided by: sqrt(K) under 'sp', K / sqrt(K_base) under 'mup'."""
  if cfg.parametrization != 'mup':
    return math.sqrt(head_dim)
  base_head_dim = (cfg.base_d_model or cfg.d_model) / cfg.n_heads
  return math.sqrt(head_dim) * math.sqrt(head_dim / base_head_dim)  # exactly sqrt(K) at the base


def readout(cfg: ModelConfig, x_BxLxD: jax.Array) -> jax.Array:
  """The hidden states the output layer reads: x * mup_output_multiplier / m under 'mup' (x
  itself otherwise)."""
  if cfg.parametrization != 'mup':
    return x_BxLxD
  scale = cfg.mup_output_multiplier / width_multiplier(cfg)
  return x_BxLxD if scale == 1.0 else x_BxLxD * scale


def embedding_scale(cfg: ModelConfig) -> float:
  """The encoder-decoder's sqrt(d_model) embedding factor (Vaswani et al. 2017, section 3.4),
  held at the base width under 'mup' so the embedding's output does not grow with width."""
  return math.sqrt(cfg.base_d_model if width_multiplier(cfg) != 1.0 else cfg.d_model)


def branch_multiplier(cfg: ModelConfig, n_layers: int) -> float:
  """What each residual branch of a stack of n_layers blocks is multiplied by."""
  if cfg.depth_scaling != 'completep':
    return 1.0
  return (cfg.base_n_layers or n_layers) / n_layers


def residual_init_layers(cfg: ModelConfig) -> int:
  """The depth in GPT-2's init_std / sqrt(2 n_layers) for residual projections."""
  if cfg.depth_scaling == 'completep' and cfg.base_n_layers:
    return cfg.base_n_layers
  return cfg.n_layers


def hidden_fan_in_ratios(shapes, base_shapes):
  """Per parameter, the growth of its fan-in over the base model (dimension -2 of a kernel) when
  it is a hidden matrix, two or more of whose dimensions grow; 1.0 for every other parameter."""

  def ratio(shape, base_shape) -> float:
    grown = [d for d, b in zip(shape.shape, base_shape.shape) if d != b]
    if len(shape.shape) < 2 or len(grown) < 2:
      return 1.0
    return shape.shape[-2] / base_shape.shape[-2]

  return jax.tree.map(ratio, shapes, base_shapes)


def scale_init(params, fan_in_ratios):
  """Hidden matrices' initial values divided by sqrt(fan-in ratio): variance init_std^2 / r."""
  return jax.tree.map(
    lambda leaf, r: leaf if r == 1.0 else leaf * (1.0 / math.sqrt(r)), params, fan_in_ratios
  )


def learning_rate_multipliers(fan_in_ratios):
  """Adam's per-parameter learning-rate multipliers: 1 / r for hidden matrices, 1 otherwise."""
  return jax.tree.map(lambda r: 1.0 / r, fan_in_ratios)
