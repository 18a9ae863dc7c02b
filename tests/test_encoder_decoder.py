import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax.decoding import seq2seq
from gptjax.models.config import ModelConfig
from gptjax.models.encoder_decoder import EncoderDecoder, loss_and_metrics
from gptjax.models.layers import padding_mask

PAD, BOS, EOS = 0, 1, 2
# The paper's post-LN model with sinusoids, tiny. init_std 0.2: attention far from uniform, so
# that what a position may see visibly moves it. Every test's model has these shapes, which lets
# the operations JAX compiles for one be reused by the others.
CONFIG = ModelConfig(
  vocab_size=16,
  n_ctx=12,
  n_layers=2,
  n_encoder_layers=1,
  n_heads=4,
  d_model=32,
  d_ff=64,
  architecture='encoder_decoder',
  norm='post',
  pos_emb='sinusoidal',
  init_std=0.2,
)
SOURCE_BxS = np.array([[5, 6, 7, 8, 9, 2, 0, 0], [10, 11, 12, 2, 0, 0, 0, 0]], np.int32)
TARGET_IN_BxT = np.array([[1, 3, 4, 5, 6], [1, 7, 8, 2, 0]], np.int32)


def init(config: ModelConfig = CONFIG, seed: int = 0):
  return EncoderDecoder(config).init(jax.random.key(seed), SOURCE_BxS, TARGET_IN_BxT)['params']


def stack_layers(params, config: ModelConfig):
  """Unscanned parameters (h_0, h_1, ...) of both stacks in the layout of scan_layers=True."""
  stacked = dict(params)
  for stack, n_layers in (('encoder', config.n_encoder_layers), ('decoder', config.n_layers)):
    layers = [params[stack][f'h_{i}'] for i in range(n_layers)]
    stacked[stack] = {name: value for name, value in params[stack].items() if name[:2] != 'h_'}
    stacked[stack]['h'] = {'block': jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
  return stacked


@pytest.mark.parametrize(
  'variant',
  [{}, {'norm': 'pre', 'tie_embeddings': False, 'pos_emb': 'learned'}, {'scan_layers': True}],
)
def test_parameters_are_named_after_their_place(variant):
  config = dataclasses.replace(CONFIG, **variant)
  params = jax.eval_shape(lambda: init(config))
  untied = {'wte_source', 'wte_target', 'lm_head'}
  if config.tie_embeddings:
    assert 'wte' in params and not untied & set(params)
  else:
    assert untied <= set(params) and 'wte' not in params
  for stack, n_layers in (('encoder', config.n_encoder_layers), ('decoder', config.n_layers)):
    assert ('ln_f' in params[stack]) == (config.norm == 'pre')
    assert ('wpe' in params[stack]) == (config.pos_emb == 'learned')
    if config.scan_layers:
      block = params[stack]['h']['block']
      assert block['mlp']['c_fc']['kernel'].shape == (n_layers, config.d_model, config.d_ff)
    else:
      block = params[stack][f'h_{n_layers - 1}']
      assert f'h_{n_layers}' not in params[stack]
    assert ('cross_attn' in block) == (stack == 'decoder')


def _untied():
  """An untied model: wte_source / wte_target are only ever read as input embeddings, so with
  ids 1..L their rows 1..L are the inputs at positions 0..L-1, to differentiate with respect to."""
  config = dataclasses.replace(CONFIG, tie_embeddings=False)
  return EncoderDecoder(config), init(config)


def test_encoder_sees_both_directions_but_not_padding():
  model, params = _untied()
  source_1xS = np.array([[1, 2, 3, 4, 5, 6, 0, 0]], np.int32)  # id j at position j - 1

  def memory_sums_S(table_VxD):
    memory_1xSxD = model.apply(
      {'params': {**params, 'wte_source': {'embedding': table_VxD}}}, source_1xS, method='encode'
    )
    return memory_1xSxD[0].sum(axis=1)

  grad_SxVxD = jax.jit(jax.jacrev(memory_sums_S))(params['wte_source']['embedding'])
  per_id_SxV = np.abs(np.asarray(grad_SxVxD)).sum(axis=2)
  assert np.all(per_id_SxV[:6, 1:7] > 0)  # every real position sees earlier and later ones alike
  assert np.all(per_id_SxV[:6, PAD] == 0)  # and none of the padding


def test_decoder_never_sees_the_future():
  model, params = _untied()
  memory_BxSxD = model.apply({'params': params}, SOURCE_BxS, method='encode')
  memory_mask_Bx1xS = padding_mask(SOURCE_BxS, PAD)
  decode = jax.jit(
    lambda target_in: model.apply(
      {'params': params}, target_in, memory_BxSxD, memory_mask_Bx1xS, method='decode'
    )
  )
  logits_BxTxV = decode(TARGET_IN_BxT)
  t = 2
  changed = TARGET_IN_BxT.copy()
  changed[:, t + 1 :] = (changed[:, t + 1 :] + 5) % CONFIG.vocab_size
  changed_BxTxV = decode(changed)
  np.testing.assert_array_equal(logits_BxTxV[:, : t + 1], changed_BxTxV[:, : t + 1])
  assert np.abs(logits_BxTxV[:, t + 1 :] - changed_BxTxV[:, t + 1 :]).max() > 1e-3

  # Through the gradient: with ids 1..T at positions 0..T-1, d logits[t] / d embedding row
  # t' + 1 is non-zero exactly when t' <= t.
  target_in_1xT = np.arange(1, 8, dtype=np.int32)[None]

  def logit_sums_T(table_VxD):
    return model.apply(
      {'params': {**params, 'wte_target': {'embedding': table_VxD}}},
      target_in_1xT,
      memory_BxSxD[:1],
      memory_mask_Bx1xS[:1],
      method='decode',
    )[0].sum(axis=1)

  grad_TxVxD = jax.jit(jax.jacrev(logit_sums_T))(params['wte_target']['embedding'])
  per_position_TxT = np.abs(np.asarray(grad_TxVxD)).sum(axis=2)[:, 1:8]
  np.testing.assert_array_equal(per_position_TxT > 0, np.tril(np.ones((7, 7), bool)))


def test_cross_attention_reads_the_source_and_never_its_padding():
  model, params = EncoderDecoder(CONFIG), init()
  apply = jax.jit(lambda source, target_in: model.apply({'params': params}, source, target_in))
  logits_BxTxV = apply(SOURCE_BxS, TARGET_IN_BxT)  # S = 8 source positions, T = 5 target
  assert logits_BxTxV.shape == (2, 5, CONFIG.vocab_size) and logits_BxTxV.dtype == jnp.float32
  # Another source token moves every target position's logits.
  changed = SOURCE_BxS.copy()
  changed[:, 1] = 15
  assert np.all(np.abs(apply(changed, TARGET_IN_BxT) - logits_BxTxV).max(axis=2) > 1e-3)
  # Padding the source to another length (S = 11) changes nothing,
  more_padding = np.pad(SOURCE_BxS, ((0, 0), (0, 3)), constant_values=PAD)
  np.testing.assert_allclose(apply(more_padding, TARGET_IN_BxT), logits_BxTxV, atol=1e-5)
  # nor does whatever the encoder left at the padded positions.
  memory_BxSxD = model.apply({'params': params}, SOURCE_BxS, method='encode')
  noise_BxSxD = 100 * jax.random.normal(jax.random.key(0), memory_BxSxD.shape)
  noise_BxSxD = jnp.where((SOURCE_BxS == PAD)[..., None], noise_BxSxD, memory_BxSxD)
  decoded = model.apply(
    {'params': params}, TARGET_IN_BxT, noise_BxSxD, padding_mask(SOURCE_BxS, PAD), method='decode'
  )
  np.testing.assert_allclose(decoded, logits_BxTxV, atol=1e-6)


@pytest.mark.parametrize(
  'variant',
  [{}, {'norm': 'pre', 'pos_emb': 'rotary', 'tie_embeddings': False, 'scan_layers': True}],
)
def test_cached_decoding_gives_the_logits_of_the_full_decoder(variant):
  """With scan_layers, against the unrolled layers' full decoder (with the same parameters)."""
  config = dataclasses.replace(CONFIG, **variant)
  unrolled = dataclasses.replace(config, scan_layers=False)
  params = init(unrolled)
  target_in_BxT = jax.random.randint(jax.random.key(1), (2, 9), 3, config.vocab_size)
  memory_BxSxD = jax.random.normal(jax.random.key(2), (2, SOURCE_BxS.shape[1], config.d_model))
  memory_mask_Bx1xS = padding_mask(SOURCE_BxS, PAD)
  full_BxTxV = EncoderDecoder(unrolled).apply(
    {'params': params}, target_in_BxT, memory_BxSxD, memory_mask_Bx1xS, method='decode'
  )
  model = EncoderDecoder(config)
  if config.scan_layers:
    params = stack_layers(params, config)

  @jax.jit
  def apply(variables, ids_BxL, start):
    return model.apply(
      variables,
      ids_BxL,
      memory_BxSxD,
      memory_mask_Bx1xS,
      cache_start_B=jnp.full(2, start),
      method='decode',
      mutable=['cache'],
    )

  def decode(variables, start: int, end: int):
    logits, variables = apply(variables, target_in_BxT[:, start:end], start)
    np.testing.assert_allclose(logits, full_BxTxV[:, start:end], atol=1e-5, rtol=1e-5)
    return {'params': params, **variables}

  # A first call over 3 positions creates the cache, then one position per call.
  variables = decode({'params': params}, 0, 3)
  for t in range(3, 9):
    variables = decode(variables, t, t + 1)


def _sequence_score(
  model: EncoderDecoder, params, source_BxS, ids_BxT, eos_id: int, alpha: float
) -> np.ndarray:
  """The length-penalised log-probability of each output under the full model; an output shorter
  than max_len ended with EOS, whose probability counts (and pad, which decoding never picks, is
  out of the softmax)."""
  ids_BxT = np.asarray(ids_BxT)
  batch, max_len = ids_BxT.shape
  n_tokens_B = (ids_BxT != PAD).sum(axis=1)
  finished_B = n_tokens_B < max_len
  target_BxT1 = np.concatenate([np.full((batch, 1), BOS), ids_BxT], axis=1)
  target_BxT1[finished_B, n_tokens_B[finished_B] + 1] = eos_id
  logits_BxTxV = model.apply({'params': params}, source_BxS, target_BxT1[:, :max_len])
  logits_BxTxV = jnp.where(jnp.arange(model.config.vocab_size) == PAD, -jnp.inf, logits_BxTxV)
  log_probs_BxT = jnp.take_along_axis(
    jax.nn.log_softmax(logits_BxTxV), target_BxT1[:, 1:, None], axis=-1
  )[..., 0]
  length_B = n_tokens_B + finished_B
  log_prob_B = jnp.sum(jnp.where(np.arange(max_len) < length_B[:, None], log_probs_BxT, 0), 1)
  return np.asarray(log_prob_B / ((5 + length_B) / 6) ** alpha)


def test_beam_search_finds_what_greedy_does_or_better():
  # Pre-LN, untied and with large weights, a random model has peaked, varied next-token
  # distributions.
  config = dataclasses.replace(CONFIG, norm='pre', tie_embeddings=False, init_std=0.5)
  model, params = EncoderDecoder(config), init(config)
  sources_BxS = jax.random.randint(jax.random.key(2), (6, 8), 3, config.vocab_size)
  sources_BxS = np.where(np.arange(8) < np.array([8, 7, 6, 5, 4, 3])[:, None], sources_BxS, PAD)
  max_len = 8
  # An EOS this model writes early in some rows: row 0's third token when there is no EOS.
  eos_id = int(seq2seq.greedy(model, params, sources_BxS, max_len, BOS, -1, PAD)[0, 2])
  greedy_BxT = seq2seq.greedy(model, params, sources_BxS, max_len, BOS, eos_id, PAD)
  assert np.any(greedy_BxT == PAD) and np.any(np.all(greedy_BxT != PAD, axis=1))

  np.testing.assert_array_equal(
    seq2seq.beam_search(model, params, sources_BxS, max_len, 1, BOS, eos_id, PAD), greedy_BxT
  )
  beam_BxT, score_B = seq2seq._beam_search(  # pylint: disable=protected-access
    model, params, sources_BxS, max_len, 4, BOS, eos_id, PAD, 0.6
  )
  beam_score_B = _sequence_score(model, params, sources_BxS, beam_BxT, eos_id, 0.6)
  np.testing.assert_allclose(score_B, beam_score_B, atol=1e-4, rtol=1e-4)
  greedy_score_B = _sequence_score(model, params, sources_BxS, greedy_BxT, eos_id, 0.6)
  assert np.all(beam_score_B >= greedy_score_B - 1e-5)
  assert np.any(beam_score_B > greedy_score_B + 1e-3)

  # Scanned layers keep a leading layer axis on every cache leaf; the beams must follow the same.
  scanned = EncoderDecoder(dataclasses.replace(config, scan_layers=True))
  np.testing.assert_array_equal(
    seq2seq.beam_search(
      scanned, stack_layers(params, config), sources_BxS, max_len, 4, BOS, eos_id, PAD
    ),
    beam_BxT,
  )


def test_loss_is_label_smoothed_cross_entropy_over_the_labelled_tokens():
  params = init()
  source_len = SOURCE_BxS.shape[1]
  targets_BxU = np.array([[1, 3, 4, 5, 2, 0], [1, 7, 8, 9, 10, 2]], np.int32)  # [BOS, ids, EOS]
  batch_BxW = np.concatenate([SOURCE_BxS, targets_BxU], axis=1)

  @functools.partial(jax.jit, static_argnames=('config', 'deterministic'))
  def loss(eps, config=CONFIG, deterministic=True, seed=0):
    return loss_and_metrics(
      EncoderDecoder(config),
      params,
      batch_BxW,
      source_len=source_len,
      pad_id=PAD,
      label_smoothing=eps,
      deterministic=deterministic,
      rng=jax.random.key(seed),
    )

  logits_BxTxV = EncoderDecoder(CONFIG).apply({'params': params}, SOURCE_BxS, targets_BxU[:, :-1])
  labels_BxT = targets_BxU[:, 1:]
  labelled = labels_BxT != PAD
  objective, metrics = loss(0.0)
  reference = optax.softmax_cross_entropy_with_integer_labels(
    logits_BxTxV[labelled], labels_BxT[labelled]
  ).mean()
  np.testing.assert_allclose(objective, reference, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], reference, rtol=1e-5)
  predicted = np.argmax(logits_BxTxV, axis=-1)
  np.testing.assert_allclose(metrics['accuracy'], (predicted == labels_BxT)[labelled].mean())

  # Smoothed: the target distribution puts 1 - eps on the label and eps / V on every token.
  eps, vocab = 0.1, CONFIG.vocab_size
  log_probs_BxTxV = np.asarray(jax.nn.log_softmax(logits_BxTxV), np.float64)
  smoothed_BxTxV = np.full(log_probs_BxTxV.shape, eps / vocab)
  for b, t in zip(*np.nonzero(labelled)):
    smoothed_BxTxV[b, t, labels_BxT[b, t]] += 1 - eps
  objective, metrics = loss(eps)
  reference_smoothed = -(smoothed_BxTxV * log_probs_BxTxV).sum(-1)[labelled].mean()
  np.testing.assert_allclose(objective, reference_smoothed, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], reference, rtol=1e-5)

  # Dropout follows the key it is given.
  dropout = dataclasses.replace(CONFIG, embd_dropout=0.1, resid_dropout=0.1)
  noisy = lambda seed: loss(eps, dropout, False, seed)[0]
  assert noisy(0) == noisy(0) != noisy(1)


def _reversal_rows(
  rng: np.random.Generator, n: int, source_len: int, target_len: int, vocab_size: int
) -> np.ndarray:
  """Rows in gptjax/data/pairs.py's layout: a source of 3-6 ids and EOS, the target its reversal."""
  rows = np.full((n, source_len + target_len + 1), PAD, np.int32)
  for row in rows:
    length = rng.integers(3, 7)
    ids = rng.integers(EOS + 1, vocab_size, length)
    row[: length + 1] = [*ids, EOS]
    row[source_len : source_len + length + 2] = [BOS, *ids[::-1], EOS]
  return rows


def test_learns_to_reverse_a_sequence():
  source_len, target_len = 8, 7
  # With the initialisation's usual 0.02 and sqrt(d_model) = 5.7 the scaled token embeddings would
  # be small beside the sinusoids, and this post-LN model slow to start; 0.1 makes them comparable.
  config = dataclasses.replace(CONFIG, init_std=0.1)
  model = EncoderDecoder(config)
  rng = np.random.default_rng(0)
  train_rows = _reversal_rows(rng, 2000, source_len, target_len, config.vocab_size)
  params = init(config)
  n_steps = 200
  optimizer = optax.adam(optax.warmup_cosine_decay_schedule(0, 3e-3, 20, n_steps, 3e-4))

  @jax.jit
  def train_step(params, opt_state, batch_BxW):
    grads, metrics = jax.grad(
      lambda p: loss_and_metrics(
        model, p, batch_BxW, source_len=source_len, pad_id=PAD, label_smoothing=0.1
      ),
      has_aux=True,
    )(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(n_steps):
    params, opt_state, metrics = train_step(
      params, opt_state, train_rows[rng.integers(0, len(train_rows), 64)]
    )
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10]), losses[::20]

  test_rows = _reversal_rows(
    np.random.default_rng(1), 32, source_len, target_len, config.vocab_size
  )
  ids_BxT = seq2seq.greedy(model, params, test_rows[:, :source_len], target_len, BOS, EOS, PAD)
  expected_BxT = np.where(
    test_rows[:, source_len + 1 :] == EOS, PAD, test_rows[:, source_len + 1 :]
  )
  assert np.mean(np.all(ids_BxT == expected_BxT, axis=1)) >= 0.8
