"""gptjax/bert.py: bidirectionality, padding, masking, the MLM loss, the BERT-base parameter count
and short training runs of the masked LM and a classifier."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax.data.tokenizers import ByteTokenizer
from gptjax.models import bert
from gptjax.models.config import ModelConfig
from gptjax.models.layers import padding_mask

TOK = ByteTokenizer()
CLS, SEP, PAD = TOK.start_id, TOK.delim_id, TOK.pad_id
SMALL = ModelConfig(
  vocab_size=bert.mlm_vocab_size(TOK.vocab_size),
  n_ctx=16,
  n_layers=2,
  n_heads=4,
  d_model=32,
  d_ff=64,
  architecture='bert',
  norm='post',
  layer_norm_eps=1e-12,
)


def init(config: ModelConfig, seq_len: int | None = None):
  ids_1xL = jnp.zeros((1, seq_len or config.n_ctx), jnp.int32)
  return bert.BERT(config).init(jax.random.key(0), ids_1xL)['params']


def test_mask_id_is_appended_after_the_tokenizer_vocabulary():
  assert bert.mlm_vocab_size(TOK.vocab_size) == TOK.vocab_size + 1
  assert bert.mask_id(SMALL.vocab_size) == TOK.vocab_size


def test_mlm_inputs_wrap_the_window_start_in_cls_and_sep():
  windows_BxL1 = jnp.arange(2 * 9, dtype=jnp.int32).reshape(2, 9) + 10
  ids_BxL = bert.mlm_inputs(windows_BxL1, CLS, SEP)
  assert ids_BxL.shape == (2, 8) and ids_BxL.dtype == jnp.int32
  np.testing.assert_array_equal(ids_BxL[:, 0], CLS)
  np.testing.assert_array_equal(ids_BxL[:, -1], SEP)
  np.testing.assert_array_equal(ids_BxL[:, 1:-1], windows_BxL1[:, :6])


@pytest.mark.parametrize('norm, tie', [('pre', True), ('post', False)])
def test_logits_shape_and_parameters(norm, tie):
  config = dataclasses.replace(SMALL, norm=norm, tie_embeddings=tie)
  params = init(config)
  ids_BxL = jax.random.randint(jax.random.key(1), (2, 11), 0, config.vocab_size)
  logits, hidden = jax.jit(
    lambda p, i: bert.BERT(config).apply({'params': p}, i, jnp.ones_like(i), return_hidden=True)
  )(params, ids_BxL)
  assert logits.shape == (2, 11, config.vocab_size) and logits.dtype == jnp.float32
  assert hidden.shape == (2, 11, config.d_model)
  assert params['wse']['embedding'].shape == (config.type_vocab_size, config.d_model)
  assert ('ln_f' in params) == (norm == 'pre')
  assert ('mlm_bias' in params) == tie and ('lm_head' in params) == (not tie)
  assert 'pooler' not in params


@pytest.mark.parametrize('norm', ['pre', 'post'])
def test_every_position_sees_every_other(norm):
  """d hidden[i] / d input embedding[j] is non-zero for every i and j: for j < i and for j > i."""
  # One vocabulary row per position: ids 0..L-1 make the token table the input embeddings.
  config = dataclasses.replace(SMALL, vocab_size=SMALL.n_ctx, norm=norm)
  params = init(config)
  positions_1xL = jnp.arange(config.n_ctx)[None]
  # Each position's hidden state along a random direction: the sum of a LayerNorm's output is
  # constant, so it would have no gradient.
  direction_D = jax.random.normal(jax.random.key(2), (config.d_model,))

  def projected_hidden_L(x_LxD):
    _, hidden = bert.BERT(config).apply(
      {'params': {**params, 'wte': {'embedding': x_LxD}}}, positions_1xL, return_hidden=True
    )
    return hidden[0] @ direction_D

  jacobian_LxLxD = jax.jit(jax.jacrev(projected_hidden_L))(params['wte']['embedding'])
  assert np.all(np.abs(jacobian_LxLxD).sum(axis=2) > 1e-6)


def test_padding_never_leaks_into_real_positions():
  params = init(SMALL)
  model = bert.BERT(SMALL)
  ids_BxL = jax.random.randint(jax.random.key(3), (2, SMALL.n_ctx), 6, TOK.vocab_size)
  n_real = jnp.array([10, 5])
  real_BxL = jnp.arange(SMALL.n_ctx) < n_real[:, None]
  ids_BxL = jnp.where(real_BxL, ids_BxL, PAD)
  mask_Bx1xL = padding_mask(ids_BxL, PAD)
  apply = jax.jit(
    lambda ids, segments: model.apply({'params': params}, ids, segments, mask_Bx1xL=mask_Bx1xL)
  )
  segments_BxL = jnp.zeros_like(ids_BxL)
  logits = apply(ids_BxL, segments_BxL)
  # Other tokens and segments at the padded positions, the same padding mask.
  other_ids = jnp.where(real_BxL, ids_BxL, (ids_BxL + 7) % TOK.vocab_size)
  other_logits = apply(other_ids, jnp.where(real_BxL, 0, 1))
  # Exactly: masked keys get weight exp(-huge) = 0.
  np.testing.assert_array_equal(logits[real_BxL], other_logits[real_BxL])
  # Whereas a real token changes the outputs at the other real positions.
  changed_logits = apply(ids_BxL.at[:, 3].add(1), segments_BxL)
  assert np.abs(logits[:, 0] - changed_logits[:, 0]).min() > 0


def masked(ids_BxL, key, **kwargs):
  return jax.jit(
    lambda i, k: bert.mask_tokens(
      i, k, mask_id=TOK.vocab_size, vocab_size=TOK.vocab_size, special_ids=(CLS, SEP, PAD), **kwargs
    )
  )(ids_BxL, key)


def test_masking_statistics():
  batch, seq_len, p = 512, 128, 0.15
  windows = jax.random.randint(jax.random.key(4), (batch, seq_len + 1), 6, TOK.vocab_size)
  ids_BxL = bert.mlm_inputs(windows, CLS, SEP)
  # Padding at the end of every other row.
  ids_BxL = ids_BxL.at[::2, -20:].set(PAD)
  corrupted, selected = map(np.asarray, masked(ids_BxL, jax.random.key(5), probability=p))
  ids = np.asarray(ids_BxL)

  special = np.isin(ids, [CLS, SEP, PAD])
  assert not selected[special].any()
  np.testing.assert_array_equal(corrupted[~selected], ids[~selected])
  n_eligible, n_selected = (~special).sum(), selected.sum()
  assert abs(n_selected / n_eligible - p) < 4 * math.sqrt(p * (1 - p) / n_eligible)

  # Of the selected: 80% [MASK]; 10% a random token, which is the original 1 time in V; 10% kept.
  vocab = TOK.vocab_size
  expected = {'mask': 0.8, 'random other': 0.1 * (1 - 1 / vocab), 'kept': 0.1 + 0.1 / vocab}
  was, now = ids[selected], corrupted[selected]
  observed = {
    'mask': np.mean(now == TOK.vocab_size),
    'random other': np.mean((now != TOK.vocab_size) & (now != was)),
    'kept': np.mean(now == was),
  }
  for name, q in expected.items():
    assert abs(observed[name] - q) < 4 * math.sqrt(q * (1 - q) / n_selected), (name, observed)
  assert corrupted.max() <= TOK.vocab_size

  again = masked(ids_BxL, jax.random.key(5), probability=p)
  np.testing.assert_array_equal(again[0], corrupted)
  np.testing.assert_array_equal(again[1], selected)
  assert (np.asarray(masked(ids_BxL, jax.random.key(6), probability=p)[1]) != selected).any()


def test_loss_and_accuracy_match_a_naive_recomputation():
  config = dataclasses.replace(SMALL, vocab_size=bert.mlm_vocab_size(40))
  params = init(config)
  model = bert.BERT(config)
  windows = jax.random.randint(jax.random.key(7), (8, config.n_ctx + 1), 6, 40)
  windows = windows.at[0, 5:9].set(PAD)  # padding is never chosen
  rng = jax.random.key(8)
  objective, metrics = jax.jit(
    lambda p, w, r: bert.loss_and_metrics(
      model, p, w, r, cls_id=CLS, sep_id=SEP, pad_id=PAD, mlm_probability=0.3
    )
  )(params, windows, rng)

  ids_BxL = bert.mlm_inputs(windows, CLS, SEP)
  corrupted, selected = jax.jit(
    lambda i, r: bert.mask_tokens(
      i, r, mask_id=40, vocab_size=40, special_ids=(CLS, SEP, PAD), probability=0.3
    )
  )(ids_BxL, rng)
  logits = np.asarray(jax.jit(model.apply)({'params': params}, corrupted))
  selected, targets = np.asarray(selected), np.asarray(ids_BxL)
  assert selected.sum() > 10
  losses = optax.softmax_cross_entropy_with_integer_labels(logits[selected], targets[selected])
  np.testing.assert_allclose(metrics['loss'], np.mean(losses), rtol=1e-5)
  assert objective == metrics['loss']
  accuracy = np.mean(logits[selected].argmax(axis=-1) == targets[selected])
  np.testing.assert_allclose(metrics['accuracy'], accuracy, rtol=1e-6)


def test_parameter_count_of_bert_base_matches_hugging_face():
  torch = pytest.importorskip('torch', reason='the [hf] extra is not installed')
  transformers = pytest.importorskip('transformers', reason='the [hf] extra is not installed')
  config = ModelConfig(
    vocab_size=30522,
    n_ctx=512,
    n_layers=12,
    n_heads=12,
    d_model=768,
    d_ff=3072,
    architecture='bert',
    norm='post',
    pos_emb='learned',
    type_vocab_size=2,
    layer_norm_eps=1e-12,
  )
  shapes = jax.eval_shape(lambda: init(config, seq_len=8))
  ours = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
  # BertForMaskedLM: BertModel without the pooler (108,891,648) plus the MLM head, which is what
  # BERT holds: transform Dense 768 x 768 + 768, its LayerNorm 2 x 768, the output bias 30,522,
  # the decoder tied to the word embeddings (counted once). The pooler is BertClassifier's.
  with torch.device('meta'):
    reference = transformers.BertForMaskedLM(transformers.BertConfig())
  expected = sum(p.numel() for p in reference.parameters())
  assert ours == expected == 109_514_298


# Twelve 2-letter words over 24 distinct letters (ids 6..29 of a 32-token vocabulary).
WORDS = np.random.default_rng(0).permutation(24).reshape(12, 2) + 6


def tiled_windows(n_windows: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
  """Each window one word repeated, from a random phase: a masked letter is given by the others."""
  tiled = np.tile(WORDS[rng.integers(0, len(WORDS), n_windows)], (1, seq_len // 2 + 2))
  phase = rng.integers(0, 2, n_windows)
  return np.stack([row[p : p + seq_len + 1] for row, p in zip(tiled, phase)]).astype(np.int32)


def test_masked_lm_training_beats_chance():
  config = dataclasses.replace(
    SMALL, vocab_size=bert.mlm_vocab_size(32), n_ctx=32, d_model=64, d_ff=128, resid_dropout=0.1
  )
  model = bert.BERT(config)
  params = init(config)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)
  kwargs = dict(cls_id=CLS, sep_id=SEP, pad_id=PAD, mlm_probability=0.15)

  @jax.jit
  def train_step(params, opt_state, windows, step):
    mask_rng, dropout_rng = jax.random.split(jax.random.fold_in(jax.random.key(9), step))
    objective = lambda p: bert.loss_and_metrics(
      model, p, windows, mask_rng, deterministic=False, dropout_rng=dropout_rng, **kwargs
    )[0]
    updates, opt_state = optimizer.update(jax.grad(objective)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  evaluate = jax.jit(
    lambda p, w: bert.loss_and_metrics(model, p, w, jax.random.key(10), **kwargs)[1]
  )
  rng = np.random.default_rng(1)
  eval_windows = tiled_windows(64, config.n_ctx, rng)
  before = evaluate(params, eval_windows)
  for step in range(100):
    params, opt_state = train_step(params, opt_state, tiled_windows(16, config.n_ctx, rng), step)
  after = evaluate(params, eval_windows)
  # Chance is 1/24; the window's other letters narrow a masked one down to its word's two, and its
  # position to one.
  assert before['accuracy'] < 0.1 and after['accuracy'] > 0.35, (before, after)
  assert after['loss'] < before['loss'] - 2.0, (before, after)


def test_classifier_reuses_bert_params_and_learns_a_trivial_task():
  model = bert.BertClassifier(SMALL, n_classes=2, pad_id=PAD)
  rng = np.random.default_rng(2)
  half = (TOK.vocab_size + 6) // 2

  def batch(n):
    """[CLS] tokens [SEP] [PAD]...: each row's tokens all from the lower or the upper half of the
    non-special ids, the label saying which."""
    labels = rng.integers(0, 2, n)
    low = np.where(labels == 1, half, 6)[:, None]
    ids = rng.integers(low, low + half - 6, size=(n, SMALL.n_ctx))
    lengths = rng.integers(3, SMALL.n_ctx + 1, n)
    ids = np.where(np.arange(SMALL.n_ctx) < lengths[:, None] - 1, ids, PAD)
    ids[np.arange(n), lengths - 1] = SEP
    ids[:, 0] = CLS
    return jnp.asarray(ids, jnp.int32), jnp.asarray(labels, jnp.int32)

  ids, labels = batch(32)
  params = model.init(jax.random.key(11), ids)['params']
  pretrained = init(SMALL)
  assert jax.tree.structure(params['bert']) == jax.tree.structure(pretrained)
  params = {**params, 'bert': pretrained}
  assert params['pooler']['kernel'].shape == (SMALL.d_model, SMALL.d_model)

  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, ids, labels, step):
    def loss_fn(p):
      logits = model.apply(
        {'params': p},
        ids,
        deterministic=False,
        rngs={'dropout': jax.random.fold_in(jax.random.key(12), step)},
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  for step in range(40):
    params, opt_state = train_step(params, opt_state, *batch(32), step)
  ids, labels = batch(256)
  logits = jax.jit(model.apply)({'params': params}, ids)
  assert logits.shape == (256, 2) and logits.dtype == jnp.float32
  assert np.mean(np.argmax(logits, axis=-1) == labels) > 0.9
