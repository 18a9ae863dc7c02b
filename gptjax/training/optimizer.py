"""The one optimizer of every run, pre-training and fine-tuning: AdamW with linear warmup, then
cosine, inverse-square-root or linear decay, and global-norm gradient clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """0 -> lr linearly over warmup_steps, then with train.schedule
  'cosine': cosine to min_lr_ratio * lr at train.steps;
  'rsqrt': lr * sqrt(warmup_steps / step), the schedule of "Attention Is All You Need" (its
           d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) is this with lr = (d_model *
           warmup_steps)^-0.5, 7e-4 for the base model's d 512 and 4,000 warmup steps);
  'linear': linearly to min_lr_ratio * lr at train.steps (GPT-1's fine-tuning, with
           min_lr_ratio 0)."""
  if train.schedule == 'rsqrt':
    warmup = max(train.warmup_steps, 1)
    return lambda step: train.lr * jnp.minimum(
      step / warmup, jnp.sqrt(warmup / jnp.maximum(step, 1))
    )
  if train.schedule == 'linear':
    warmup = train.warmup_steps
    return optax.join_schedules(
      [
        optax.linear_schedule(0.0, train.lr, warmup),
        optax.linear_schedule(
          train.lr, train.lr * train.min_lr_ratio, max(1, train.steps - warmup)
        ),
      ],
      [warmup],
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=train.lr,
    warmup_steps=train.warmup_steps,
    decay_steps=train.steps,
    end_value=train.lr * train.min_lr_ratio,
  )


def weight_decay_mask(params) -> dict:
  """True for the kernels of Dense layers, the matrices that multiply activations; biases,
  LayerNorm and embedding tables are not decayed."""
  return jax.tree_util.tree_map_with_path(lambda path, leaf: path[-1].key == 'kernel', params)


def make_optimizer(
  train: ml_collections.ConfigDict,
  learning_rate_multipliers: dict | None = None,
  schedule: optax.Schedule | None = None,
) -> optax.GradientTransformation:
  """AdamW as train.{lr, schedule, warmup_steps, steps, min_lr_ratio, b1, b2, eps, weight_decay}
  say, after clipping the global gradient norm to train.grad_clip (0: no clipping).

  learning_rate_multipliers: a tree like the params of factors on each parameter's Adam direction
  (muP's, from registry.learning_rate_multipliers); the decoupled decay stays lr * weight_decay.
  schedule: step -> learning rate in place of train's (stacked runs pass each run's own); the
  optimizer state has the same structure either way."""
  learning_rate = learning_rate_schedule(train) if schedule is None else schedule
  if learning_rate_multipliers is None:
    adamw = optax.adamw(
      learning_rate,
      b1=train.b1,
      b2=train.b2,
      eps=train.eps,
      weight_decay=train.weight_decay,
      mask=weight_decay_mask,
    )
  else:  # optax.adamw's chain with the multipliers after Adam's direction
    adamw = optax.chain(
      optax.scale_by_adam(b1=train.b1, b2=train.b2, eps=train.eps),
      optax.stateless(
        lambda updates, params: jax.tree.map(jnp.multiply, updates, learning_rate_multipliers)
      ),
      optax.add_decayed_weights(train.weight_decay, weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate),
    )
  if train.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw)
  return adamw
