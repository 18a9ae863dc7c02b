"""Olsson et al. (2022)'s in-context-learning score: how much better a token late in the context
is predicted than one early in it.

  icl_score = mean loss at context position `late` - mean loss at position `early`  (nats/token)

Position t is the prediction of a window's token t + 1 from its tokens 0..t (t + 1 tokens of
context), the model's output at input position t. Olsson et al.'s late = 500 and early = 50 are
the defaults; the late band must end before the windows' last position (late + band < seq_len,
windows of seq_len + 1 tokens), so with the default band they need seq_len and n_ctx >= 506
(band 0: >= 501), and a shorter context needs positions that fit (a UserError says which). The
score is negative when more context helps. A model that reads no context (a unigram model)
scores 0 in expectation; a model that copies a repeated sequence scores about -ln(V) on it; in
training, the induction-head phase change shows as a sudden fall of the score.

Band: the loss at a position is the mean over positions t - band .. t + band (default band = 5:
11 positions; band = 0 is Olsson et al.'s single position). Around 50, and more so around 500,
the mean loss changes slowly with position, so the band moves the expected value little, while
it averages 11 times the tokens of each window: a smaller standard error. The score is computed
per window (its late band's mean loss minus its early band's), then averaged over windows; its
standard error is that of the mean over windows (windows next to each other in the split are not
quite independent, so it is a little optimistic).

The core, token_losses and icl_score, takes any function from windows to per-token losses
(logits_loss_fn makes one of a logits function, gpt_loss_fn of a GPT's parameters), so it can be
checked on synthetic models. For a pre-training workdir, evaluate_workdir scores the latest
checkpoint or every checkpoint (for the score against training tokens: train with a small
train.checkpoint_every and a large train.keep_checkpoints: by default a run keeps 3) on
the validation windows of its token cache that training's evaluation reads (validation_windows;
windows.eval_batches), of train.seq_len tokens unless seq_len says otherwise.
experiments/icl_score.py is its command line.

The repeated-random-tokens probe (Olsson et al.'s test of induction heads): windows of a random
sequence of `half` tokens drawn uniformly from a set of ids, then the same sequence again
(repeated_random_windows, a pure function of its seed), and their copy score

  copy_score = mean loss over the second occurrence - mean loss over the first  (nats/token)

the second occurrence's losses excluding its first token (it follows the first occurrence's last
one, so it is not predictable), the first's excluding its first `skip` tokens (the model's start
of context). A model that copies perfectly scores about -ln(len(ids)); one that does not copy (a
unigram model) scores 0 in expectation. copy_workdir probes every checkpoint of a workdir with
windows of the tokenizer's ids of a set of characters (copy_ids; by default the lowercase letters
a-z).
"""

import functools
import os
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from gptjax import configuration
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.data import windows
from gptjax.errors import UserError
from gptjax.models import layers, parametrization, registry
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.models.losses import token_cross_entropy
from gptjax.training import checkpoint, sharding
from gptjax.training import state as state_lib

LATE, EARLY, BAND = 500, 50, 5

# windows (B, L + 1) int32 -> per-token losses (B, L): -log p(window[:, t + 1] | window[:, :t + 1])
LossFn = Callable[[np.ndarray], np.ndarray]


def token_losses(loss_fn: LossFn, windows_NxL1: np.ndarray, batch_size: int = 16) -> np.ndarray:
  """(N, L) float64 next-token losses of N windows of L + 1 tokens, batch_size windows at a time
  (the last batch padded with copies of the first window, so loss_fn sees one shape)."""
  windows_NxL1 = np.asarray(windows_NxL1, np.int32)
  n, width = windows_NxL1.shape
  losses_NxL = np.zeros((n, width - 1))
  for start in range(0, n, batch_size):
    batch = windows_NxL1[start : start + batch_size]
    rows = len(batch)
    if rows < batch_size:
      batch = np.concatenate([batch, np.repeat(windows_NxL1[:1], batch_size - rows, axis=0)])
    losses_NxL[start : start + rows] = np.asarray(loss_fn(batch), np.float64)[:rows]
  return losses_NxL


def logits_loss_fn(logits_fn: Callable[[np.ndarray], np.ndarray]) -> LossFn:
  """The LossFn of a function from inputs (B, L) to next-token logits (B, L, V), its log-softmax
  taken in float64."""

  def loss_fn(windows_BxL1: np.ndarray) -> np.ndarray:
    logits_BxLxV = np.asarray(logits_fn(windows_BxL1[:, :-1]), np.float64)
    logits_BxLxV = logits_BxLxV - logits_BxLxV.max(-1, keepdims=True)
    log_z_BxL = np.log(np.exp(logits_BxLxV).sum(-1))
    target_BxL = np.take_along_axis(logits_BxLxV, windows_BxL1[:, 1:, None], -1)[..., 0]
    return log_z_BxL - target_BxL

  return loss_fn


@functools.partial(jax.jit, static_argnames='config')
def _gpt_losses(config: ModelConfig, params, windows_BxL1: jax.Array) -> jax.Array:
  logits_BxLxV = GPT(config).apply({'params': params}, windows_BxL1[:, :-1])
  return token_cross_entropy(logits_BxLxV, windows_BxL1[:, 1:])


def gpt_loss_fn(config: ModelConfig, params) -> LossFn:
  """The LossFn of a GPT (float32 log-softmax, as training's loss), batches split over the
  devices (token_losses' batch_size must then be a multiple of jax.device_count())."""
  batch_sharding = sharding.batch_sharding(sharding.make_mesh())
  return lambda windows_BxL1: np.asarray(
    _gpt_losses(config, params, jax.device_put(windows_BxL1, batch_sharding))
  )


def check_positions(n_positions: int, late: int = LATE, early: int = EARLY, band: int = BAND):
  """A UserError unless both bands lie within n_positions positions, early's before late's."""
  if band < 0:
    raise UserError(f'the band is {band}; it must be 0 or more')
  if early - band < 0:
    raise UserError(f'the early position {early} ± {band} starts before position 0')
  if late + band >= n_positions:
    raise UserError(
      f"the late position {late} ± {band} is past the last of the windows' {n_positions} "
      f'positions (0..{n_positions - 1}; position t predicts token t + 1 from t + 1 tokens): '
      f'pass a late position of at most {n_positions - 1 - band} (and an early one before it), '
      f'or use windows of {late + band + 2} tokens or more (a context n_ctx >= {late + band + 1})'
    )
  if early + band >= late - band:
    raise UserError(
      f'the early position {early} ± {band} must come before the late position {late} ± {band}, '
      'without overlapping it'
    )


def _stderr(values_N: np.ndarray) -> float:
  """The standard error of the mean of values_N (nan for fewer than 2)."""
  n = len(values_N)
  return float(values_N.std(ddof=1) / np.sqrt(n)) if n > 1 else float('nan')


def icl_score(
  losses_NxL: np.ndarray, late: int = LATE, early: int = EARLY, band: int = BAND
) -> dict:
  """The ICL score of per-token losses (N windows, L positions; see the module docstring):
  icl_score and icl_stderr, late_loss and early_loss (each band's mean loss), the settings, and
  loss_curve: the mean loss at each position 0..L-1 (for plotting)."""
  losses_NxL = np.asarray(losses_NxL, np.float64)
  check_positions(losses_NxL.shape[1], late, early, band)
  late_N = losses_NxL[:, late - band : late + band + 1].mean(1)
  early_N = losses_NxL[:, early - band : early + band + 1].mean(1)
  difference_N = late_N - early_N
  n = len(difference_N)
  return {
    'icl_score': float(difference_N.mean()),
    'icl_stderr': _stderr(difference_N),
    'late_loss': float(late_N.mean()),
    'early_loss': float(early_N.mean()),
    'late': late,
    'early': early,
    'band': band,
    'windows': n,
    'mean_loss': float(losses_NxL.mean()),
    'loss_curve': [float(x) for x in losses_NxL.mean(0)],
  }


def evaluate_params(
  config: ModelConfig,
  params,
  windows_NxL1: np.ndarray,
  late: int = LATE,
  early: int = EARLY,
  band: int = BAND,
  batch_size: int = 16,
) -> dict:
  """icl_score of a GPT's parameters on the windows."""
  check_positions(windows_NxL1.shape[1] - 1, late, early, band)
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  losses = token_losses(gpt_loss_fn(config, params), windows_NxL1, batch_size)
  return icl_score(losses, late, early, band)


def validation_windows(
  workdir: str, seq_len: int = 0, limit: int = 0, within_documents: bool = False
) -> np.ndarray:
  """(N, seq_len + 1) windows of the workdir's validation tokens: the seq_len-token windows that
  tile the split (those training's evaluation reads), seq_len default train.seq_len (at most
  model.n_ctx). within_documents keeps only windows with no document start after their first
  token, so that every prediction's context is its own document's. limit > 0: that many of them,
  evenly spread over the split."""
  config, _ = state_lib.read_run(workdir, 'gpt')
  seq_len = seq_len or config.train.seq_len
  if seq_len > config.model.n_ctx:
    raise UserError(f"seq_len {seq_len} is longer than the model's context {config.model.n_ctx}")
  if not os.path.isfile(os.path.join(workdir, 'data', windows.LAYOUT.meta_file)):
    raise UserError(
      f'{workdir} holds no token cache ({os.path.join(workdir, "data", windows.LAYOUT.meta_file)}'
      '), so no validation windows; the run that trained it writes one'
    )
  # is_writer=False: a workdir that is only read is never written to.
  tokenizer, data = windows.load_tokenizer_and_data(config, workdir, seq_len, is_writer=False)
  n_windows = (len(data.val) - 1) // seq_len
  (rows,) = windows.eval_batches(data.val, 1, n_windows, seq_len)
  if within_documents:
    rows = rows[~(rows[:, 1:] == tokenizer.bos_id).any(1)]
    if not len(rows):
      raise UserError(
        f'no validation window of {seq_len + 1} tokens in {workdir} lies within one document'
      )
  if 0 < limit < len(rows):
    rows = rows[np.arange(limit) * len(rows) // limit]
  return rows


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints in WORKDIR/checkpoints, in order."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoint in {workdir}/checkpoints')
  reader = checkpoint.read_only_manager(directory, ocp.PyTreeCheckpointHandler())
  try:
    return sorted(reader.all_steps())
  finally:
    reader.close()


def evaluate_workdir(
  workdir: str,
  late: int = LATE,
  early: int = EARLY,
  band: int = BAND,
  every_checkpoint: bool = False,
  seq_len: int = 0,
  limit: int = 0,
  within_documents: bool = False,
  batch_size: int = 16,
) -> list[dict]:
  """icl_score rows, on validation_windows, of a pre-training workdir's newest readable
  checkpoint or of each of its checkpoints (every_checkpoint; see score_checkpoints)."""
  rows_NxL1 = validation_windows(workdir, seq_len, limit, within_documents)
  check_positions(rows_NxL1.shape[1] - 1, late, early, band)
  return score_checkpoints(
    workdir,
    lambda config, params: evaluate_params(
      config, params, rows_NxL1, late, early, band, batch_size
    ),
    every_checkpoint,
  )


def score_checkpoints(
  workdir: str, score: Callable[[ModelConfig, dict], dict], every_checkpoint: bool
) -> list[dict]:
  """score(model config, params) of a pre-training workdir's newest readable checkpoint, or of
  each of its checkpoints in order (every_checkpoint), each row with step and tokens (the
  training tokens seen by then: step * global_batch_size * train.seq_len). An unreadable
  checkpoint is reported and skipped; nothing in the workdir is written."""
  config, tokenizer = state_lib.read_run(workdir, 'gpt')
  model = registry.build(configuration.model_config(config, tokenizer.vocab_size), tokenizer.pad_id)
  abstract = jax.eval_shape(lambda: registry.init_params(model, jax.random.PRNGKey(config.seed)))
  tokens_per_step = config.train.global_batch_size * config.train.seq_len
  steps = checkpoint_steps(workdir)
  if not steps:
    raise UserError(f'no checkpoint in {workdir}/checkpoints')
  results = []
  for step in steps if every_checkpoint else steps[::-1]:
    try:
      params = state_lib.restore_params(workdir, abstract, step)
    except state_lib.NoReadableCheckpoint:  # reported; other checkpoints may be readable
      continue
    results.append({'step': step, 'tokens': step * tokens_per_step, **score(model.config, params)})
    if not every_checkpoint:
      break
  if not results:
    raise UserError(f'no readable checkpoint in {workdir}/checkpoints (tried {steps})')
  return results


COPY_HALF, COPY_WINDOWS, COPY_SKIP = 50, 200, 5
ATTENTION_WINDOWS = 16  # of the probe's windows, those whose attention copy_workdir reads
LOWERCASE = 'abcdefghijklmnopqrstuvwxyz'


def repeated_random_windows(
  n: int, half: int, ids: np.ndarray | list[int], seed: int = 0
) -> np.ndarray:
  """(n, 2 * half) int32 windows: each a random sequence of `half` tokens drawn uniformly (with
  replacement) from `ids`, then the same sequence again."""
  ids = np.unique(np.asarray(ids, np.int64))
  if not len(ids):
    raise UserError('the set of token ids to draw the repeated sequences from is empty')
  if half < 2:
    raise UserError(f'half is {half}; the repeated sequences need at least 2 tokens')
  first_NxH = ids[np.random.default_rng(seed).integers(0, len(ids), (n, half))]
  return np.concatenate([first_NxH, first_NxH], axis=1).astype(np.int32)


def copy_score(losses_NxL: np.ndarray, half: int, skip: int = COPY_SKIP) -> dict:
  """The copy score of per-token losses of repeated_random_windows (N windows of 2 * half
  tokens, L = 2 * half - 1 positions; see the module docstring): copy_score and copy_stderr (over
  windows), first_loss and repeat_loss (each occurrence's mean loss), the settings, and
  copy_curve: the mean loss at each position 0..L-1 (for plotting)."""
  losses_NxL = np.asarray(losses_NxL, np.float64)
  if losses_NxL.shape[1] != 2 * half - 1:
    raise UserError(
      f'the losses have {losses_NxL.shape[1]} positions; windows of twice {half} tokens have '
      f'{2 * half - 1}'
    )
  if not 0 <= skip < half - 1:
    raise UserError(f'skip is {skip}; it must be 0 or more and less than half - 1 = {half - 1}')
  # Position t predicts token t + 1: the first occurrence's tokens skip + 1 .. half - 1 are
  # positions skip .. half - 2; the second's tokens half + 1 .. 2 half - 1, positions half ..
  # 2 half - 2 (token half, the repeat's first, follows the first occurrence's last).
  first_N = losses_NxL[:, skip : half - 1].mean(1)
  repeat_N = losses_NxL[:, half:].mean(1)
  difference_N = repeat_N - first_N
  n = len(difference_N)
  return {
    'copy_score': float(difference_N.mean()),
    'copy_stderr': _stderr(difference_N),
    'first_loss': float(first_N.mean()),
    'repeat_loss': float(repeat_N.mean()),
    'half': half,
    'skip': skip,
    'copy_windows': n,
    'copy_curve': [float(x) for x in losses_NxL.mean(0)],
  }


def copy_ids(tokenizer: tokenizer_lib.Tokenizer, symbols: str = LOWERCASE) -> list[int]:
  """The ids of the characters of `symbols`, one token each (each must be one token)."""
  ids = [tokenizer.encode(symbol) for symbol in symbols]
  if any(len(symbol_ids) != 1 for symbol_ids in ids):
    raise UserError(f'the tokenizer does not encode each of {symbols!r} as one token')
  return [symbol_ids[0] for symbol_ids in ids]


def copy_workdir(
  workdir: str,
  half: int = COPY_HALF,
  n_windows: int = COPY_WINDOWS,
  skip: int = COPY_SKIP,
  seed: int = 0,
  every_checkpoint: bool = True,
  batch_size: int = 16,
  symbols: str = LOWERCASE,
) -> list[dict]:
  """copy_score rows, on n_windows repeated_random_windows of its tokenizer's ids of `symbols`,
  of a pre-training workdir's checkpoints (see score_checkpoints), or of its newest readable one
  unless every_checkpoint; with induction_attention's scores and attention_offsets on the first
  ATTENTION_WINDOWS windows, unless the model scans its layers."""
  config, tokenizer = state_lib.read_run(workdir, 'gpt')
  if 2 * half - 1 > config.model.n_ctx:
    raise UserError(
      f"windows of twice {half} tokens need a context of {2 * half - 1}; {workdir}'s model has "
      f'{config.model.n_ctx}: pass a half of at most {(config.model.n_ctx + 1) // 2}'
    )
  windows_NxL1 = repeated_random_windows(n_windows, half, copy_ids(tokenizer, symbols), seed)
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()

  def score(model_config: ModelConfig, params) -> dict:
    losses_NxL = token_losses(gpt_loss_fn(model_config, params), windows_NxL1, batch_size)
    result = copy_score(losses_NxL, half, skip)
    if not model_config.scan_layers:
      patterns = attention_patterns(model_config, params, windows_NxL1[:ATTENTION_WINDOWS, :-1])
      result |= induction_attention(patterns, half)
      result['attention_offsets'] = attention_offsets(patterns, half)
    return result

  return score_checkpoints(workdir, score, every_checkpoint)


def attention_patterns(config: ModelConfig, params, tokens_BxL: np.ndarray) -> list[np.ndarray]:
  """Each block's causal self-attention probabilities (B, H, L, L: query, key), recomputed from
  the queries and keys its c_attn projection gives (captured from the model's own forward pass),
  as layers.SelfAttention uses them: rotary positions if configured, the parametrization's
  temperature, the causal mask. For a GPT of unscanned blocks."""
  if config.scan_layers:
    raise UserError('attention_patterns reads unscanned blocks; this model scans its layers')
  _, state = GPT(config).apply(
    {'params': params},
    jax.numpy.asarray(tokens_BxL),
    capture_intermediates=lambda module, _: module.name == 'c_attn',
    mutable=['intermediates'],
  )
  batch, seq_len = tokens_BxL.shape
  head_dim = config.d_model // config.n_heads
  temperature = parametrization.attention_temperature(config, head_dim)
  positions_BxL = jax.numpy.arange(seq_len)[None]
  patterns = []
  for i in range(config.n_layers):
    (qkv_BxLx3D,) = state['intermediates'][f'h_{i}']['attn']['c_attn']['__call__']
    q_BxLxHxK, k_BxLxHxK, _ = (
      t.reshape(batch, seq_len, config.n_heads, head_dim)
      for t in jax.numpy.split(qkv_BxLx3D.astype(config.dtype), 3, axis=-1)
    )
    if config.pos_emb == 'rotary':
      q_BxLxHxK = layers.rotary(q_BxLxHxK, positions_BxL)
      k_BxLxHxK = layers.rotary(k_BxLxHxK, positions_BxL)
    logits_BxHxLxL = np.einsum(
      'blhk,bshk->bhls', np.asarray(q_BxLxHxK, np.float64) / temperature, k_BxLxHxK
    )
    logits_BxHxLxL = np.where(
      np.asarray(layers.causal_mask(seq_len))[None], logits_BxHxLxL, -np.inf
    )
    logits_BxHxLxL -= logits_BxHxLxL.max(-1, keepdims=True)
    probs_BxHxLxL = np.exp(logits_BxHxLxL)
    patterns.append(probs_BxHxLxL / probs_BxHxLxL.sum(-1, keepdims=True))
  return patterns


def induction_attention(patterns: list[np.ndarray], half: int) -> dict:
  """On repeated_random_windows of `half` tokens (their inputs), per block the largest over heads
  of two mean attentions over the repeat's queries (positions half .. 2 half - 2): to the
  previous token (t - 1; a previous-token head) and to the token after the current token's
  earlier occurrence (t - half + 1; Olsson et al.'s prefix matching, an induction head's)."""
  t = np.arange(half, 2 * half - 1)
  return {
    'previous_token': [float(p[:, :, t, t - 1].mean((0, 2)).max()) for p in patterns],
    'prefix_matching': [float(p[:, :, t, t - half + 1].mean((0, 2)).max()) for p in patterns],
  }


def attention_offsets(patterns: list[np.ndarray], half: int) -> list[list[tuple[int, float]]]:
  """Per block and head, on repeated_random_windows of `half` tokens: the offset back from the
  query (0: itself) that the repeat's queries (positions half .. 2 half - 2, all of whose
  offsets 0..half exist) attend to most on average, and that mean attention."""
  t = np.arange(half, 2 * half - 1)
  offsets = np.arange(half + 1)
  result = []
  for p_BxHxLxL in patterns:
    by_offset_HxO = p_BxHxLxL[:, :, t[:, None], t[:, None] - offsets].mean((0, 2))
    best_H = by_offset_HxO.argmax(-1)
    result.append([(int(o), float(by_offset_HxO[h, o])) for h, o in enumerate(best_H)])
  return result


def without_heads(config: ModelConfig, params, heads: dict[int, list[int]]):
  """params with the heads `heads` ({block: [head, ...]}) knocked out: their rows of the block's
  attention output projection (c_proj) zeroed, so nothing they attend to reaches the residual
  stream (c_proj's bias stays). For ablating a circuit's heads one at a time."""
  head_dim = config.d_model // config.n_heads
  for block, block_heads in heads.items():
    c_proj = dict(params[f'h_{block}']['attn']['c_proj'])
    kernel_DxD = np.array(c_proj['kernel'])
    for head in block_heads:
      kernel_DxD[head * head_dim : (head + 1) * head_dim] = 0
    c_proj['kernel'] = jax.numpy.asarray(kernel_DxD)
    attn = {**params[f'h_{block}']['attn'], 'c_proj': c_proj}
    params = {**params, f'h_{block}': {**params[f'h_{block}'], 'attn': attn}}
  return params
