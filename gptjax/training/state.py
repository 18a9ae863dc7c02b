"""The train state, and parameters read back from a workdir.
"""
import json
import os

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gptjax import configuration
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.training import checkpoint, sharding
from gptjax.training.optimizer import make_optimizer


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2] base key; step s uses fold_in(rng, s) for dropout (and BERT masking)


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = registry.init_params(model, init_rng)
  return TrainState(step=jnp.array(0, jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=dropout_rng)


def load_run(workdir: str, architecture: str = 'gpt') -> tuple[tokenizer_lib.Tokenizer, nn.Module,
                                                                dict]:
  """The tokenizer, model and latest parameters (replicated on every device) of `workdir`'s run,
  which must be of `architecture` (model.architecture; GPT for sampling and evaluation)."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise UserError(f'{workdir} holds no run (no config.json); train one with python -m gptjax.main '
                    'or convert one with python -m gptjax.convert')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  found = config.model.get('architecture', 'gpt')
  if found != architecture:
    raise UserError(f'{workdir} holds a model.architecture={found} run; this needs {architecture}')
  tokenizer = tokenizer_lib.load_or_train(config.tokenizer.kind, config.tokenizer.vocab_size, workdir)
  model = registry.build(configuration.model_config(config, tokenizer.vocab_size), tokenizer.pad_id)
  optimizer = make_optimizer(config.train)
  abstract_state = jax.eval_shape(lambda: init_state(model, optimizer, config.seed))
  shardings = sharding.state_shardings(abstract_state, sharding.make_mesh(), fsdp=False)
  state = checkpoint.restore_run(workdir, abstract_state, shardings, config.train.keep_checkpoints)
  return tokenizer, model, state.params
