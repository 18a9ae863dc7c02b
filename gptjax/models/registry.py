"""The architectures by name: model.architecture -> its record (gptjax/models/architecture.py).

model.architecture  module                   rows of a training batch, and the objective
'gpt'               gpt.GPT                  (B, seq_len + 1) token windows; next-token
                                             cross-entropy
'bert'              bert.BERT                the same windows as [CLS] ... [SEP]; masked-LM
                                             cross-entropy on 15 % of the tokens
'encoder_decoder'   encoder_decoder.         (B, source_len + seq_len + 1) source | target rows
                    EncoderDecoder           (gptjax/data/pairs.py); label-smoothed
                                             cross-entropy of the target
"""

import flax.linen as nn
import jax

from gptjax.errors import UserError
from gptjax.models import bert, encoder_decoder, gpt, parametrization
from gptjax.models.architecture import Architecture
from gptjax.models.config import ModelConfig

ARCHITECTURES = {
  record.name: record
  for record in (gpt.ARCHITECTURE, bert.ARCHITECTURE, encoder_decoder.ARCHITECTURE)
}


def get(name: str) -> Architecture:
  if name not in ARCHITECTURES:
    raise UserError(f'model.architecture={name!r}; choose one of {", ".join(ARCHITECTURES)}')
  return ARCHITECTURES[name]


def build(config: ModelConfig, pad_id: int = 0) -> nn.Module:
  """The architecture's module; pad_id marks the encoder-decoder's source padding."""
  return get(config.architecture).build(config, pad_id)


def init_params(model: nn.Module, rng: jax.Array) -> dict:
  """Freshly initialised parameters of a module `build` made, hidden matrices scaled as its
  parametrization says (gptjax/models/parametrization.py)."""
  params = _init(model, rng)
  if parametrization.width_multiplier(model.config) == 1.0:
    return params
  return parametrization.scale_init(params, fan_in_ratios(model))


def learning_rate_multipliers(model: nn.Module) -> dict | None:
  """Per-parameter Adam learning-rate multipliers of the model's parametrization; None when all
  are 1 (the standard parametrization)."""
  if parametrization.width_multiplier(model.config) == 1.0:
    return None
  return parametrization.learning_rate_multipliers(fan_in_ratios(model))


def fan_in_ratios(model: nn.Module) -> dict:
  """Per parameter of `model`, its hidden fan-in's growth over the base-width model (1.0 for
  parameters that are not hidden matrices)."""
  base = model.clone(config=parametrization.base_width_config(model.config))
  shapes, base_shapes = (
    jax.eval_shape(lambda m=m: _init(m, jax.random.PRNGKey(0))) for m in (model, base)
  )
  return parametrization.hidden_fan_in_ratios(shapes, base_shapes)


def _init(model: nn.Module, rng: jax.Array) -> dict:
  return model.init(rng, *get(model.config.architecture).example_inputs(model.config))['params']
