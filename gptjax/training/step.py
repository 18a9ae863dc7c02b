"""The jitted train and eval steps.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gptjax.errors import UserError
from gptjax.models import accounting, registry
from gptjax.models.config import ModelConfig
from gptjax.training import sharding
from gptjax.training.state import TrainState


def accumulate_gradients(grad_fn, params, batch_BxW: jax.Array, step_rng: jax.Array,
                         grad_accum_steps: int) -> tuple[tuple[jax.Array, jax.Array], dict]:
  """Mean (objective, loss) and gradients over grad_accum_steps micro-batches, computed one after
  another."""
  # Micro-batch a takes rows a, a + A, a + 2A, ...: every device keeps an equal share of each.
  micro_AxMxW = batch_BxW.reshape(-1, grad_accum_steps, batch_BxW.shape[1]).swapaxes(0, 1)

  def accumulate(carry, micro):
    index, micro_MxW = micro
    values, grads = grad_fn(params, micro_MxW, jax.random.fold_in(step_rng, index))
    return jax.tree.map(jnp.add, carry, (values, grads)), None

  zeros = ((jnp.zeros((), jnp.float32),) * 2, jax.tree.map(jnp.zeros_like, params))
  sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_AxMxW))
  return jax.tree.map(lambda total: total / grad_accum_steps, sums)


def make_train_step(objective: registry.Objective, optimizer: optax.GradientTransformation,
                    grad_accum_steps: int, deterministic: bool):
  """(state, batch rows) -> (new state, metrics), gradients averaged over micro-batches."""

  def objective_and_loss(params, rows, rng):
    value, metrics = objective(params, rows, deterministic, rng)
    return value, metrics['loss']

  def train_step(state: TrainState, batch_BxW: jax.Array):
    step_rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(objective_and_loss, has_aux=True)
    if grad_accum_steps == 1:  # no loop: XLA optimises a while loop's body less
      (value, loss), grads = grad_fn(state.params, batch_BxW, jax.random.fold_in(step_rng, 0))
    else:
      (value, loss), grads = accumulate_gradients(grad_fn, state.params, batch_BxW, step_rng,
                                                  grad_accum_steps)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    # A step with a non-finite loss or gradient changes nothing but the step counter, so no
    # non-finite value ever enters the state; the loop then stops or counts the skip.
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    keep_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep_finite(optax.apply_updates(state.params, updates), state.params),
        opt_state=keep_finite(opt_state, state.opt_state))
    return new_state, {'train_loss': loss, 'grad_norm': grad_norm}

  return train_step


def memory_estimate(model_config: ModelConfig,
                    train: ml_collections.ConfigDict) -> dict[str, int]:
  """accounting.memory_estimate per device for the train config's micro-batches and sharding."""
  return accounting.memory_estimate(
      model_config, train.global_batch_size // jax.device_count() // train.grad_accum_steps,
      train.seq_len, fsdp_shards=jax.device_count() if train.sharding == 'fsdp' else 1)


def compile_train_step(model: nn.Module, objective: registry.Objective,
                       optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh, abstract_state, state_shardings,
                       announce: bool = False):
  """The jitted, compiled train step for global batches of train.global_batch_size rows, the
  state donated (updated in place). Training and gptjax.bench both run this function."""
  train = config.train
  estimate = memory_estimate(model.config, train)
  if announce:
    print('memory per device (estimate): ' + ', '.join(
        f'{name} {size / 2**20:,.1f} MiB' for name, size in estimate.items()))
  batch = sharding.batch_sharding(mesh)
  batch_abstract = jax.ShapeDtypeStruct((train.global_batch_size, registry.row_width(config)),
                                        jnp.int32, sharding=batch)
  state_abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract_state, state_shardings)
  deterministic = not (model.config.embd_dropout or model.config.attn_dropout
                       or model.config.resid_dropout)
  try:  # compile now, so running out of memory is reported with what drives memory
    return jax.jit(
        make_train_step(objective, optimizer, train.grad_accum_steps, deterministic),
        in_shardings=(state_shardings, batch),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0).lower(state_abstract, batch_abstract).compile()
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
      raise
    raise UserError(
        f'out of memory compiling the train step (batch {train.global_batch_size} / '
        f'{train.grad_accum_steps} micro-batches, seq_len {train.seq_len}, d_model '
        f'{model.config.d_model}, n_layers {model.config.n_layers}; estimated '
        f'{sum(estimate.values()) / 2**30:.2f} GiB per device): lower the batch or raise '
        f'train.grad_accum_steps') from None


def make_eval_step(objective: registry.Objective, seed: int):
  """(params, rows) -> metrics; what is random in an objective (BERT's masking) is the same at
  every evaluation."""
  return lambda params, rows: objective(params, rows, True, jax.random.PRNGKey(seed))[1]
