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
from gptjax.models import bert, encoder_decoder, gpt
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
  """Freshly initialised parameters of a module `build` made."""
  return model.init(rng, *get(model.config.architecture).example_inputs(model.config))['params']
