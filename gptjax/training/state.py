"""The train state, and parameters read back from a workdir.

Reading parameters back (for sampling, evaluation, conversion and fine-tuning) restores only the
params subtree of a checkpoint: it needs no optimizer to shape the state.
"""

import os
import sys

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp

from gptjax import configuration
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.training import checkpoint, sharding


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2] base key; step s uses fold_in(rng, s) for dropout (and BERT masking)


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = registry.init_params(model, init_rng)
  return TrainState(
    step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params), rng=dropout_rng
  )


def load_run(
  workdir: str, architecture: str = 'gpt'
) -> tuple[tokenizer_lib.Tokenizer, nn.Module, dict]:
  """The tokenizer, model and latest parameters (replicated on every device) of `workdir`'s run,
  which must be of `architecture` (model.architecture; GPT for sampling and evaluation)."""
  config, tokenizer = read_run(workdir, architecture)
  model = registry.build(configuration.model_config(config, tokenizer.vocab_size), tokenizer.pad_id)
  abstract = jax.eval_shape(lambda: registry.init_params(model, jax.random.PRNGKey(config.seed)))
  return tokenizer, model, restore_params(workdir, abstract)


def read_run(
  workdir: str, architecture: str | tuple[str, ...], where: str = '', what: str = 'run'
) -> tuple[ml_collections.ConfigDict, tokenizer_lib.Tokenizer]:
  """The config and tokenizer of the run in `workdir`, which must be of `architecture` (or of one
  of them, given several); errors name the workdir as `where` (default: its path) and the run as
  `what`."""
  where = where or workdir
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise UserError(
      f'{where} holds no {what} (no config.json); train one with python -m gptjax.main or '
      'convert one with python -m gptjax.convert'
    )
  config = configuration.read_config(config_path)
  found = config.model.get('architecture', 'gpt')
  accepted = (architecture,) if isinstance(architecture, str) else architecture
  if found not in accepted:
    raise UserError(
      f'{where} holds a model.architecture={found} run; this needs {" or ".join(accepted)}'
    )
  return config, tokenizer_lib.load_or_train(
    config.tokenizer.kind, config.tokenizer.vocab_size, workdir
  )


def restore_params(workdir: str, abstract_params, step: int | None = None):
  """The params of the newest readable checkpoint in WORKDIR/checkpoints (or of the one of
  `step`), replicated on every device, shaped like `abstract_params` (a tree of
  jax.ShapeDtypeStruct); a UserError when there is none.

  Only the params subtree is read (orbax's partial restore), so no optimizer is built. The
  fingerprint of checkpoint.py covers the whole state and cannot be checked on a part: a params-only
  read is checked by orbax's own reading (shapes, dtypes and the stored files). An unreadable
  checkpoint is reported and the previous one read; nothing in the workdir is moved (training's
  restore_latest sets such checkpoints aside)."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoint in {workdir}/checkpoints')
  replicated = sharding.replicated(sharding.make_mesh())
  target = {
    'params': jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
      abstract_params,
    )
  }
  # Nothing is written into a workdir that is only read.
  reader = checkpoint.read_only_manager(directory, ocp.PyTreeCheckpointHandler())
  try:
    steps = sorted(reader.all_steps(), reverse=True) if step is None else [step]
    for step in steps:
      checkpoint.check_shapes(directory, step, abstract_params, part='params')
      try:
        with checkpoint.quiet_orbax_errors():
          return reader.restore(
            step,
            args=ocp.args.PyTreeRestore(
              item=target,
              restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=True,
            ),
          )['params']
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many kinds
        problem = checkpoint.unreadable_reason(e)
        if jax.process_index() == 0:
          print(
            f'warning: checkpoint {step} in {directory} is unreadable ({problem})'
            + ('; trying the previous one' if step != steps[-1] else ''),
            file=sys.stderr,
          )
  finally:
    reader.close()
  raise NoReadableCheckpoint(
    f'no readable checkpoint in {workdir}/checkpoints' + (f' (tried {steps})' if steps else '')
  )


class NoReadableCheckpoint(UserError):
  """restore_params found no checkpoint it could read (each unreadable one is reported)."""
