"""A run as it lies on disk, read back: what python -m gptjax.main or python -m gptjax.convert left
in a workdir (config.json, the tokenizer, checkpoints/), for sampling and evaluation."""
import json
import os

import jax
import ml_collections

import flax.linen as nn

from gptjax import checkpoint, configuration, models, sharding, train
from gptjax import tokenizer as tokenizer_lib
from gptjax.errors import UserError
from gptjax.optimizer import make_optimizer


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
  model = models.build(configuration.model_config(config, tokenizer.vocab_size), tokenizer.pad_id)
  optimizer = make_optimizer(config.train)
  abstract_state = jax.eval_shape(lambda: train.init_state(model, optimizer, config.seed))
  shardings = sharding.state_shardings(abstract_state, sharding.make_mesh(), fsdp=False)
  state = checkpoint.restore_run(workdir, abstract_state, shardings, config.train.keep_checkpoints)
  return tokenizer, model, state.params
