"""Input transformations: each example becomes token sequences for the decoder, with the tokenizer's
reserved START, DELIM and EXTRACT tokens:
  classification   START text EXTRACT
  entailment       START premise DELIM hypothesis EXTRACT
  similarity       START a DELIM b EXTRACT  and  START b DELIM a EXTRACT (both orders: the task
                   has none); the two final hidden states at EXTRACT are added
  multiple choice  START context DELIM choice_k EXTRACT for each k
A sequence longer than the context is cut away from the delimiter: the first segment loses its
start and the second its end, the second keeping at least half the room when it needs it.

The sequences of a split are stored as arrays (Encoded) and fed in fixed-shape batches.
"""

import dataclasses

import numpy as np

from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

FINETUNE_KINDS = ('classification', 'entailment', 'similarity', 'multiple_choice')


def transform(
  tokenizer: tokenizer_lib.Tokenizer, kind: str, example: dict, max_len: int
) -> list[list[int]]:
  """The token sequences of one example (one per row: 1, 2 for similarity, or one per choice)."""
  if kind == 'classification':
    pairs = [(example['text'], None)]
  elif kind == 'entailment':
    pairs = [(example['premise'], example['hypothesis'])]
  elif kind == 'similarity':
    pairs = [(example['a'], example['b']), (example['b'], example['a'])]
  elif kind == 'multiple_choice':
    pairs = [(example['context'], choice) for choice in example['choices']]
  else:
    raise UserError(
      f'{kind} tasks cannot be fine-tuned; use {", ".join(FINETUNE_KINDS)} '
      '(evaluate cloze tasks with python -m gptjax.evaluate)'
    )
  sequences = []
  for first, second in pairs:
    first_ids = tokenizer.encode(first)
    second_ids = [] if second is None else tokenizer.encode(second)
    room = max_len - (2 if second is None else 3)  # beside START, (DELIM,) EXTRACT
    if len(first_ids) + len(second_ids) > room:
      # Cut away from the delimiter: the first segment loses its start, the second its end, and
      # the second keeps at least half the room when it needs that much.
      keep_second = min(len(second_ids), max(room - len(first_ids), room // 2))
      second_ids = second_ids[:keep_second]
      first_ids = first_ids[len(first_ids) - (room - keep_second) :]
    tail = [] if second is None else [tokenizer.delim_id, *second_ids]
    sequences.append([tokenizer.start_id, *first_ids, *tail, tokenizer.extract_id])
  return sequences


@dataclasses.dataclass
class Encoded:
  """A split as arrays: N examples, R rows each, L positions."""

  ids_NxRxL: np.ndarray  # int32, padded with PAD
  lengths_NxR: np.ndarray  # int32 tokens of each row; 0 for a multiple choice's missing choice
  labels_N: np.ndarray  # int32


def encode_split(
  tokenizer: tokenizer_lib.Tokenizer, kind: str, examples: list[dict], max_len: int
) -> Encoded:
  rows = [transform(tokenizer, kind, example, max_len) for example in examples]
  n_rows = max(len(r) for r in rows)
  seq_len = max(len(s) for r in rows for s in r)
  ids = np.full((len(rows), n_rows, seq_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(rows), n_rows), np.int32)
  for i, example_rows in enumerate(rows):
    for r, sequence in enumerate(example_rows):
      ids[i, r, : len(sequence)] = sequence
      lengths[i, r] = len(sequence)
  return Encoded(ids, lengths, np.array([e['label'] for e in examples], np.int32))


def pad_to(encoded: Encoded, n_rows: int, seq_len: int, pad_id: int) -> Encoded:
  """The same examples in (N, n_rows, seq_len): one shape for every split, so one compilation."""
  n, rows, length = encoded.ids_NxRxL.shape
  ids = np.full((n, n_rows, seq_len), pad_id, np.int32)
  ids[:, :rows, :length] = encoded.ids_NxRxL
  lengths = np.zeros((n, n_rows), np.int32)
  lengths[:, :rows] = encoded.lengths_NxR
  return Encoded(ids, lengths, encoded.labels_N)


def batch_at(
  encoded: Encoded,
  batch_size: int,
  order: np.ndarray,
  index: int,
  process_index: int = 0,
  process_count: int = 1,
) -> dict:
  """Batch `index` of batch_size examples in `order`; the last one is filled up with copies of
  the first example at weight 0, so every batch has one shape. Of each batch, process p of P gets
  only its share: rows p*n/P .. (p+1)*n/P (what sharding.global_batch takes)."""
  share = batch_size // process_count
  rows = slice(process_index * share, (process_index + 1) * share)
  chosen = order[index * batch_size : (index + 1) * batch_size]
  weights = np.zeros(batch_size, np.float32)
  weights[: len(chosen)] = 1
  chosen = np.concatenate([chosen, np.full(batch_size - len(chosen), order[0])])[rows]
  return {
    'ids': encoded.ids_NxRxL[chosen],
    'lengths': encoded.lengths_NxR[chosen],
    'labels': encoded.labels_N[chosen],
    'weights': weights[rows],
  }


def batches(
  encoded: Encoded,
  batch_size: int,
  order: np.ndarray | None = None,
  process_index: int = 0,
  process_count: int = 1,
):
  """Every batch_at of `order` (default: as stored), in turn."""
  order = np.arange(len(encoded.labels_N)) if order is None else order
  for index in range(-(-len(order) // batch_size)):
    yield batch_at(encoded, batch_size, order, index, process_index, process_count)
