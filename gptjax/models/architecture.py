"""The record each architecture registers (gptjax/models/registry.py): what the trainer, the sweep
runner, the benchmark and the config checks need to know of it, so that none of them branches on
an architecture's name. Adding an architecture is one module with its model, objective and record.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gptjax.data import windows
from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.fields import Field
from gptjax.models.config import ModelConfig

# (params, batch, deterministic, rng) -> (the scalar to minimise, metrics). The batch is an array
# of rows or a pytree of arrays with a leading batch axis (fine-tuning's); the metrics hold
# 'loss', the plain cross-entropy in nats per predicted token, and 'accuracy' where there is one.
Objective = Callable[[dict, Any, bool, jax.Array | None], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Architecture:
  name: str  # model.architecture
  # (model config, the tokenizer's pad id) -> the Flax module.
  build: Callable[[ModelConfig, int], nn.Module]
  # The inputs model.init traces the parameters with (their shapes do not depend on lengths).
  example_inputs: Callable[[ModelConfig], tuple[jax.Array, ...]]
  # Columns of a training batch's rows.
  row_width: Callable[[ml_collections.ConfigDict], int]
  # (module, run config, tokenizer) -> the training objective.
  objective: Callable[[nn.Module, ml_collections.ConfigDict, Tokenizer], Objective]
  # (run config, workdir, whether this process writes) -> (tokenizer, data); the data has
  # train_batch(step, seed, global_batch, process_index, process_count) and eval_batches(...).
  load_data: Callable[[ml_collections.ConfigDict, str, bool], tuple[Tokenizer, Any]]
  # Raises UserError when the run config asks for something this architecture cannot do.
  check_config: Callable[[ml_collections.ConfigDict], None]
  # The fields of its own config section (config.<name>), declared as gptjax/fields.py says.
  config_fields: dict[str, Field] = dataclasses.field(default_factory=dict)
  # ModelConfig fields set from that section.
  model_fields: Callable[[ml_collections.ConfigDict], dict] = lambda config: {}
  # The tokenizer's vocabulary size -> the model's (BERT appends [MASK]).
  model_vocab_size: Callable[[int], int] = lambda tokenizer_vocab_size: tokenizer_vocab_size
  # (mean validation metrics of the objective, data) -> further eval_* metrics.
  eval_metrics: Callable[[dict[str, float], Any], dict[str, float]] = lambda means, data: {}
  # (module, params, tokenizer, data, config) -> a text shown at the end of training, or None.
  sample: Callable[[nn.Module, dict, Tokenizer, Any, ml_collections.ConfigDict], str] | None = None
  # Whether it continues a prompt token by token (gptjax.sample, evaluation, decode benchmarks).
  language_model: bool = False


def token_ids(config: ModelConfig) -> tuple[jax.Array]:
  """Example inputs of a model that reads one sequence of token ids."""
  return (jnp.zeros((1, config.n_ctx), jnp.int32),)


def check_documents_source(config: ml_collections.ConfigDict) -> None:
  """The check of an architecture trained on documents (token windows), not on pairs."""
  if config.data.source not in windows.SOURCES:
    raise UserError(
      f'data.source={config.data.source!r} gives (source, target) pairs, which only '
      'model.architecture=encoder_decoder trains on'
    )
