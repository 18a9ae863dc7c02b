"""The jitted train and eval steps, shared by every run: pre-training of each architecture on its
rows and fine-tuning on its dict of arrays.

A batch is any pytree of arrays with a leading batch axis (a pre-training batch is one int32
array of rows); an objective is `(params, batch, deterministic, rng) -> (value, metrics)` with
metrics['loss'] (gptjax.models.architecture.Objective). The step is pure: (state, batch) ->
(new state, metrics), with gradient accumulation and a guard that never lets a non-finite value
into the state.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gptjax.errors import UserError
from gptjax.models import accounting, registry
from gptjax.models.architecture import Objective
from gptjax.models.config import ModelConfig
from gptjax.training import sharding
from gptjax.training.state import TrainState


def micro_batches(batch, grad_accum_steps: int):
  """Every leaf (B, ...) as (A, B / A, ...): micro-batch a takes rows a, a + A, a + 2A, ..., so
  every device keeps an equal share of each."""
  return jax.tree.map(
    lambda leaf: leaf.reshape(-1, grad_accum_steps, *leaf.shape[1:]).swapaxes(0, 1), batch
  )


def accumulate_gradients(grad_fn, params, batch, step_rng: jax.Array, grad_accum_steps: int):
  """((mean objective, mean metrics), mean gradients) over grad_accum_steps micro-batches of
  `batch`, computed one after another; grad_fn(params, micro_batch, rng) gives the same tree for
  one micro-batch."""
  micro_A = micro_batches(batch, grad_accum_steps)

  def accumulate(carry, micro):
    index, micro_batch = micro
    values, grads = grad_fn(params, micro_batch, jax.random.fold_in(step_rng, index))
    return jax.tree.map(jnp.add, carry, (values, grads)), None

  first = jax.tree.map(lambda leaf: leaf[0], micro_A)
  values_shape = jax.eval_shape(grad_fn, params, first, step_rng)[0]
  zeros = (
    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), values_shape),
    jax.tree.map(jnp.zeros_like, params),
  )
  sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_A))
  return jax.tree.map(lambda total: total / grad_accum_steps, sums)


def _committed_finite(updates, opt_state) -> jax.Array:
  """Whether committing the step keeps the state finite, given a finite loss and gradient.

  The new parameters are the old (finite) ones plus the updates, so finite updates suffice; a NaN
  learning rate or a 0/0 in Adam with eps 0 shows there. The optimizer's moments are averages of
  the (finite) gradients with the config's betas, which validation keeps finite, so they need no
  check of their own. x * 0 is 0 for every finite x and NaN for inf and NaN, so one sum per leaf
  finds them without the overflow a norm of large finite updates would hit (the README's NaN/inf
  bullet has what the check costs)."""
  del opt_state  # finite whenever the gradients are: see above
  return jnp.isfinite(sum(jnp.sum(leaf * 0) for leaf in jax.tree.leaves(updates)))


def make_train_step(
  objective: Objective,
  optimizer: optax.GradientTransformation,
  grad_accum_steps: int,
  deterministic: bool,
  metric_names: tuple[str, ...] = (),
):
  """(state, batch) -> (new state, metrics), gradients averaged over micro-batches.

  metrics: train_loss (the objective's metrics['loss']), grad_norm, finite (whether the step was
  committed), and train_<name> for each of metric_names (more of the objective's metrics, averaged
  like the loss)."""

  def objective_and_metrics(params, batch, rng):
    value, metrics = objective(params, batch, deterministic, rng)
    return value, {'loss': metrics['loss'], **{name: metrics[name] for name in metric_names}}

  def train_step(state: TrainState, batch):
    step_rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(objective_and_metrics, has_aux=True)
    if grad_accum_steps == 1:  # no loop: XLA optimises a while loop's body less
      (value, metrics), grads = grad_fn(state.params, batch, jax.random.fold_in(step_rng, 0))
    else:
      (value, metrics), grads = accumulate_gradients(
        grad_fn, state.params, batch, step_rng, grad_accum_steps
      )
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A step with a non-finite loss, gradient or update changes nothing but the step counter, so
    # no non-finite value ever enters the state; the loop then stops or counts the skip.
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm) & _committed_finite(updates, opt_state)
    keep_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
      step=state.step + 1,
      params=keep_finite(params, state.params),
      opt_state=keep_finite(opt_state, state.opt_state),
    )
    return new_state, {
      'train_loss': metrics['loss'],
      'grad_norm': grad_norm,
      'finite': finite,
      **{f'train_{name}': metrics[name] for name in metric_names},
    }

  return train_step


def memory_estimate(model_config: ModelConfig, train: ml_collections.ConfigDict) -> dict[str, int]:
  """accounting.memory_estimate per device for the train config's micro-batches and sharding."""
  return accounting.memory_estimate(
    model_config,
    train.global_batch_size // jax.device_count() // train.grad_accum_steps,
    train.seq_len,
    fsdp_shards=jax.device_count() if train.sharding == 'fsdp' else 1,
  )


def device_memory_bytes() -> int | None:
  """The memory of one local device as JAX reports it (memory_stats' bytes_limit, on GPU and
  TPU), or None where it reports none (CPU)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # a backend without memory statistics
    return None
  limit = (stats or {}).get('bytes_limit')
  return int(limit) if limit else None


def memory_warning(
  estimate: dict[str, int],
  model_config: ModelConfig,
  train: ml_collections.ConfigDict,
  device_bytes: int | None,
) -> str | None:
  """One line saying that the estimate does not fit in device_bytes and which settings shrink
  it, or None when it fits or the device's memory is unknown."""
  total = sum(estimate.values())
  if device_bytes is None or total <= device_bytes:
    return None
  return (
    f'warning: the memory estimate, {total / 2**30:,.2f} GiB per device, exceeds the '
    f"device's {device_bytes / 2**30:,.2f} GiB; to shrink it: a smaller "
    f'train.global_batch_size ({train.global_batch_size}) or more train.grad_accum_steps '
    f"({train.grad_accum_steps}), model.remat='full' (now {model_config.remat!r}), a shorter "
    f'train.seq_len ({train.seq_len}), model.param_dtype / model.dtype bfloat16 (now '
    f"{model_config.param_dtype} / {model_config.dtype}), or train.sharding='fsdp' over several "
    f'devices (now {train.sharding!r}, {jax.device_count()} devices)'
  )


def compile_train_step(
  model: nn.Module,
  objective: Objective,
  optimizer: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  abstract_state,
  state_shardings,
  announce: bool = False,
  batch_abstract=None,
  deterministic: bool | None = None,
  metric_names: tuple[str, ...] = (),
):
  """The jitted, compiled train step, the state donated (updated in place). Training, fine-tuning
  and gptjax.bench all run this function.

  Its batches: batch_abstract, a pytree of jax.ShapeDtypeStruct with a leading axis of
  train.global_batch_size, else the architecture's rows (global_batch_size, row width). The step
  is deterministic (no dropout) when the model has no dropout, unless `deterministic` says."""
  train = config.train
  estimate = memory_estimate(model.config, train)
  if announce:
    print(
      'memory per device (estimate): '
      + ', '.join(f'{name} {size / 2**20:,.1f} MiB' for name, size in estimate.items())
    )
    warning = memory_warning(estimate, model.config, train, device_memory_bytes())
    if warning:
      print(warning, flush=True)
  batch = sharding.batch_sharding(mesh)
  if batch_abstract is None:
    row_width = registry.get(config.model.architecture).row_width(config)
    batch_abstract = jax.ShapeDtypeStruct((train.global_batch_size, row_width), jnp.int32)
  batch_abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch), batch_abstract
  )
  state_abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_shardings
  )
  if deterministic is None:
    deterministic = not (
      model.config.embd_dropout or model.config.attn_dropout or model.config.resid_dropout
    )
  try:  # compile now, so running out of memory is reported with what drives memory
    return (
      jax.jit(
        make_train_step(objective, optimizer, train.grad_accum_steps, deterministic, metric_names),
        in_shardings=(state_shardings, batch),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
      )
      .lower(state_abstract, batch_abstract)
      .compile()
    )
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
      raise
    raise UserError(
      f'out of memory compiling the train step (batch {train.global_batch_size} / '
      f'{train.grad_accum_steps} micro-batches, seq_len {train.seq_len}, d_model '
      f'{model.config.d_model}, n_layers {model.config.n_layers}; estimated '
      f'{sum(estimate.values()) / 2**30:.2f} GiB per device): lower the batch or raise '
      f'train.grad_accum_steps'
    ) from None


def make_eval_step(objective: Objective, seed: int):
  """(params, batch) -> metrics; what is random in an objective (BERT's masking) is the same at
  every evaluation."""
  return lambda params, batch: objective(params, batch, True, jax.random.PRNGKey(seed))[1]
