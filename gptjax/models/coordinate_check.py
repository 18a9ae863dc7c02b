"""The coordinate check of Yang et al. (2021, "Tensor Programs V", Figure 5): the RMS of every
layer's activations after a few Adam steps, compared across models of one family that differ only
in width (or depth).

A parametrization that lets hyperparameters transfer keeps each activation's size independent of
width (muP) or depth (CompleteP, Dey et al. 2025) during training, not only at initialisation: a
coordinate that grows with the model means its updates are too large for the bigger model (the
learning rate that suits the small one makes the large one blow up), one that shrinks means they
are too small. Under the standard parametrization the residual stream and the logits grow with
width after a few steps, and the residual stream with depth; under muP and CompleteP they stay
flat. A few steps on one fixed batch show it, at a fraction of the cost of a learning-rate sweep.
tests/test_parametrization.py asserts it; experiments/coordinate_check.py plots it.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gptjax.configs import default
from gptjax.models import registry
from gptjax.models.config import ModelConfig
from gptjax.training.optimizer import make_optimizer


def train_config(lr: float, steps: int) -> ml_collections.ConfigDict:
  """The default train config with a constant learning rate (no warmup, no decay), no weight decay
  and no clipping: the learning rate is the only optimizer setting that acts."""
  train = default.get_config().train
  train.update(
    lr=lr, warmup_steps=0, steps=steps, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.0
  )
  return train


def activation_rms(
  cfg: ModelConfig, seeds: int = 3, steps: int | Sequence[int] = 10, lr: float = 3e-3
) -> dict[str, float] | dict[int, dict[str, float]]:
  """The RMS of every module's output (and of the logits) after `steps` Adam steps on one batch,
  averaged over `seeds` initialisations trained side by side (vmapped).

  Names are the modules' paths ('h_1/mlp/c_fc'; 'h_1' is block 1's output, the residual stream),
  'logits' the model's output. `steps` a sequence of step counts (0 is the initialisation):
  {step count: that dict}, measured along one training run per seed (the learning rate is
  constant, so the same as separate runs of each length)."""
  counts = (steps,) if isinstance(steps, int) else tuple(sorted(set(steps)))
  model = registry.build(cfg)
  optimizer = make_optimizer(
    train_config(lr, max(max(counts), 1)), registry.learning_rate_multipliers(model)
  )
  batch = jax.random.randint(jax.random.PRNGKey(99), (16, cfg.n_ctx + 1), 0, cfg.vocab_size)
  objective = registry.get('gpt').objective(model, None, None)

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(lambda p: objective(p, batch, True, None)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def rms(params):
    _, captured = model.apply(
      {'params': params}, batch[:, :-1], capture_intermediates=True, mutable=['intermediates']
    )
    return jax.tree.map(lambda a: jnp.sqrt(jnp.mean(jnp.square(a))), captured['intermediates'])

  def train(key):
    params = registry.init_params(model, key)
    carry, done, measured = (params, optimizer.init(params)), 0, []
    for count in counts:
      if count > done:
        carry, _ = jax.lax.scan(step, carry, length=count - done)
      done = count
      measured.append(rms(carry[0]))
    return measured

  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  measured = jax.jit(jax.vmap(train))(keys)
  rows = {
    count: {
      '/'.join(k.key for k in path[:-2]) or 'logits': float(np.mean(leaf))
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
    for count, tree in zip(counts, measured)
  }
  return rows[steps] if isinstance(steps, int) else rows


def spread(rows: list[dict[str, float]]) -> dict[str, float]:
  """Per activation, its largest RMS over the models divided by its smallest."""
  return {name: max(r[name] for r in rows) / min(r[name] for r in rows) for name in rows[0]}
