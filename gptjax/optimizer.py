"""AdamW with linear warmup, cosine decay to a floor, and global-norm gradient clipping."""
import jax
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """0 -> lr linearly over warmup_steps, then cosine to min_lr_ratio * lr at train.steps."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.lr, warmup_steps=train.warmup_steps,
      decay_steps=train.steps, end_value=train.lr * train.min_lr_ratio)


def weight_decay_mask(params) -> dict:
  """True for matrices that multiply activations; biases, LayerNorm and embeddings are not decayed."""
  def decays(path, leaf) -> bool:
    return leaf.ndim >= 2 and path[0].key not in ('wte', 'wpe')
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  adamw = optax.adamw(learning_rate_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                      weight_decay=train.weight_decay, mask=weight_decay_mask)
  if train.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw)
  return adamw
