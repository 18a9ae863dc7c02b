"""Zero- and few-shot evaluation of a pre-trained run, as GPT-2 and GPT-3 do it.

The command line is python -m gptjax.evaluate (gptjax/evaluate.py).

Multiple choice: each choice's log-likelihood given the prompt, summed over its tokens, and
divided by its number of tokens (GPT-3's per-token normalisation); the most likely choice is the
answer. Both accuracies are reported; `accuracy` is the summed one. Cloze: the target counts as
predicted when every one of its tokens is the model's most likely next token (greedy decoding
would write it), as in LAMBADA; its log-likelihood is reported too.

Prompts: [BOS], then k demonstrations, each a training example's context with its answer, each
followed by the separator, then the example's context. The separator is a blank line ('\\n\\n') by
default: demonstrations read as separate paragraphs (or blocks of code). Demonstrations are drawn
with the seed and the example's index alone, so an example gets the same prompt whatever the limit
is. A prompt too long for the model loses tokens from the left; the answer itself must fit.

Tokenization: context + answer are encoded together (as the model saw text in training); the
answer's tokens are those after the longest prefix the encoding shares with the context's own.

Scoring is batched and jitted: sequences are right-padded to the next power of two (16 at least,
n_ctx at most), so a task compiles once per length bucket, not once per example.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.data.tokenizers import Tokenizer
from gptjax.downstream import tasks
from gptjax.errors import UserError
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.models.losses import token_cross_entropy
from gptjax.training import sharding

SEPARATOR = '\n\n'
EVAL_KINDS = ('multiple_choice', 'cloze')


def encode_pair(
  tokenizer: Tokenizer, context: str, continuation: str, n_ctx: int
) -> tuple[list[int], int, bool]:
  """(ids, n, truncated): [BOS] + tokens of context + continuation, the last n of them the
  continuation's, cut from the left to n_ctx + 1 tokens (n_ctx predictions)."""
  full = tokenizer.encode(context + continuation)
  prefix = tokenizer.encode(context)
  shared = 0
  while shared < min(len(full), len(prefix)) and full[shared] == prefix[shared]:
    shared += 1
  n_continuation = len(full) - shared
  if n_continuation > n_ctx:
    raise ValueError(f'the answer alone is {n_continuation} tokens; the context holds {n_ctx}')
  ids = [tokenizer.bos_id, *full]
  return ids[-(n_ctx + 1) :], n_continuation, len(ids) > n_ctx + 1


def _bucket(length: int, n_ctx: int) -> int:
  return min(n_ctx, max(16, 1 << (length - 1).bit_length()))


@functools.partial(jax.jit, static_argnames='config')
def _score_batch(
  config: ModelConfig, params, inputs_BxL: jax.Array, targets_BxL: jax.Array, mask_BxL: jax.Array
) -> tuple[jax.Array, jax.Array]:
  logits_BxLxV = GPT(config).apply({'params': params}, inputs_BxL)
  logprob_BxL = -token_cross_entropy(logits_BxLxV, targets_BxL)
  greedy_BxL = jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL
  return (jnp.sum(logprob_BxL * mask_BxL, axis=1), jnp.all(greedy_BxL | (mask_BxL == 0), axis=1))


def score(
  model: GPT, params, sequences: list[tuple[list[int], int]], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
  """(summed log-likelihood, all-greedy) of the last n tokens of each (ids, n), ids at most
  n_ctx + 1 long. Sequences are grouped by length bucket and run batch_size at a time."""
  n_ctx = model.config.n_ctx
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  batch_sharding = sharding.batch_sharding(sharding.make_mesh())
  logprob_N, greedy_N = np.zeros(len(sequences)), np.zeros(len(sequences), bool)
  by_bucket: dict[int, list[int]] = {}
  for i, (ids, _) in enumerate(sequences):
    by_bucket.setdefault(_bucket(len(ids) - 1, n_ctx), []).append(i)
  for length, indices in sorted(by_bucket.items()):
    for start in range(0, len(indices), batch_size):
      chunk = indices[start : start + batch_size]
      inputs, targets, mask = (np.zeros((batch_size, length), np.int32) for _ in range(3))
      for row, i in enumerate(chunk):
        ids, n = sequences[i]
        inputs[row, : len(ids) - 1], targets[row, : len(ids) - 1] = ids[:-1], ids[1:]
        mask[row, len(ids) - 1 - n : len(ids) - 1] = 1
      logprob_B, greedy_B = _score_batch(
        model.config, params, *jax.device_put((inputs, targets, mask), batch_sharding)
      )
      logprob_N[chunk], greedy_N[chunk] = (
        np.asarray(logprob_B)[: len(chunk)],
        np.asarray(greedy_B)[: len(chunk)],
      )
  return logprob_N, greedy_N


def answer(kind: str, example: dict) -> str:
  return example['choices'][example['label']] if kind == 'multiple_choice' else example['target']


def prompt(kind: str, example: dict, demonstrations: list[dict], separator: str = SEPARATOR) -> str:
  return (
    ''.join(d['context'] + answer(kind, d) + separator for d in demonstrations) + example['context']
  )


def demonstrations(
  pool: list[dict], shots: int, seed: int, index: int, exclude: int | None = None
) -> list[dict]:
  """`shots` examples of `pool` drawn with (seed, index), never pool[exclude]."""
  if not shots:
    return []
  candidates = [i for i in range(len(pool)) if i != exclude]
  if shots > len(candidates):
    raise UserError(
      f'{shots} shots need {shots} demonstration examples; the pool has {len(candidates)}'
    )
  picked = np.random.default_rng([seed, index]).choice(len(candidates), shots, replace=False)
  return [pool[candidates[i]] for i in picked]


def evaluate_task(
  tokenizer: Tokenizer,
  model: GPT,
  params,
  task: tasks.Task,
  shots: int = 0,
  seed: int = 0,
  split: str = '',
  limit: int = 0,
  separator: str = SEPARATOR,
  batch_size: int = 32,
) -> dict:
  """Accuracy (and its standard error) of the model on a multiple-choice or cloze task.

  The examples are the first `limit` (0 = all) of `split` (default: test if the task has it,
  else validation); demonstrations come from the train split, or from the same split without
  the example itself when the task has no train split.
  """
  if task.kind not in EVAL_KINDS:
    raise UserError(
      f'task {task.name} is a {task.kind} task; zero- and few-shot evaluation '
      f'needs one of {", ".join(EVAL_KINDS)} (fine-tune others: gptjax.finetune)'
    )
  split = split or ('test' if 'test' in task.splits else 'validation')
  examples = task.split(split)[: limit or None]
  same_pool = 'train' not in task.splits
  pool = task.split(split) if same_pool else task.split('train')
  n_ctx = model.config.n_ctx
  sequences, truncated, owner = [], [], []  # owner: the example each sequence belongs to
  for i, example in enumerate(examples):
    text = prompt(
      task.kind, example, demonstrations(pool, shots, seed, i, i if same_pool else None), separator
    )
    continuations = example['choices'] if task.kind == 'multiple_choice' else [example['target']]
    for continuation in continuations:
      try:
        ids, n, cut = encode_pair(tokenizer, text, continuation, n_ctx)
      except ValueError as e:
        raise UserError(f'{split} example {i + 1} of {task.name}: {e}') from None
      sequences.append((ids, n))
      truncated.append(cut)
      owner.append(i)
  logprob_S, greedy_S = score(model, params, sequences, batch_size)
  tokens_S = np.array([n for _, n in sequences])
  owner_S, truncated_S = np.array(owner), np.array(truncated)
  result = {
    'task': task.name,
    'kind': task.kind,
    'split': split,
    'shots': shots,
    'seed': seed,
    'n': len(examples),
    'truncated': float(np.mean([truncated_S[owner_S == i].any() for i in range(len(examples))])),
  }
  if task.kind == 'cloze':
    correct = greedy_S
    result['target_logprob'] = float(logprob_S.mean())  # mean over examples, nats per target
    result['target_tokens'] = float(tokens_S.mean())
  else:
    starts = np.searchsorted(owner_S, np.arange(len(examples)))
    ends = np.append(starts[1:], len(owner_S))
    labels = np.array([e['label'] for e in examples])
    pick = lambda values: np.array([np.argmax(values[s:e]) for s, e in zip(starts, ends)])
    correct = pick(logprob_S) == labels
    correct_norm = pick(logprob_S / tokens_S) == labels
    result.update(_accuracy(correct_norm, 'accuracy_norm', 'stderr_norm'))
    result['chance'] = float(np.mean([1 / len(e['choices']) for e in examples]))
  result.update(_accuracy(correct, 'accuracy', 'stderr'))
  return result


def _accuracy(correct: np.ndarray, name: str, stderr_name: str) -> dict:
  p = float(np.mean(correct))
  return {name: p, stderr_name: math.sqrt(p * (1 - p) / len(correct))}
