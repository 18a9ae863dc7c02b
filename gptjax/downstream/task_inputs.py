"""Input transformations: each example becomes token sequences (rows) for the pre-trained model,
between the markers of its architecture (gptjax/downstream/backbones.py):

  GPT (Radford et al. 2018, 3.3), the tokenizer's START, DELIM and EXTRACT:
  classification   START text EXTRACT
  entailment       START premise DELIM hypothesis EXTRACT
  similarity       START a DELIM b EXTRACT  and  START b DELIM a EXTRACT (both orders: the task
                   has none); the two final hidden states at EXTRACT are added
  multiple choice  START context DELIM choice_k EXTRACT for each k
  BERT (Devlin et al. 2019, 3-4), [CLS] and [SEP] (the tokenizer's START and DELIM, as in BERT's
  pre-training): [CLS] text [SEP] for one text, [CLS] a [SEP] b [SEP] for two, in the same rows.

Each row also has segment ids: 0 for the first marker, the first text and the delimiter, 1 for
the second text and the last marker (BERT's sentence A / B; a GPT does not read them).
A sequence longer than the context is cut away from the delimiter: the first segment loses its
start and the second its end, the second keeping at least half the room when it needs it.

The sequences of a split are stored as arrays (Encoded) and fed in fixed-shape batches.
"""

import dataclasses

import numpy as np

from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

FINETUNE_KINDS = ('classification', 'entailment', 'similarity', 'multiple_choice')


@dataclasses.dataclass(frozen=True)
class Markers:
  """The ids a row's texts sit between: first TEXT last, or first TEXT delim TEXT last."""

  first: int
  delim: int
  last: int


def gpt_markers(tokenizer: tokenizer_lib.Tokenizer) -> Markers:
  """GPT-1's START, DELIM and EXTRACT; a UserError naming the one the tokenizer lacks."""
  check_specials(
    tokenizer,
    'GPT fine-tuning',
    {
      'START (<start>)': tokenizer.start_id,
      'DELIM (<delim>)': tokenizer.delim_id,
      'EXTRACT (<extract>)': tokenizer.extract_id,
    },
  )
  return Markers(tokenizer.start_id, tokenizer.delim_id, tokenizer.extract_id)


def bert_markers(tokenizer: tokenizer_lib.Tokenizer) -> Markers:
  """BERT's [CLS] and [SEP]: the tokenizer's START and DELIM, the ids BERT's pre-training puts
  around its windows (gptjax/models/bert.py); a UserError naming the one the tokenizer lacks."""
  check_specials(
    tokenizer,
    'BERT fine-tuning',
    {'[CLS] (<start>)': tokenizer.start_id, '[SEP] (<delim>)': tokenizer.delim_id},
  )
  return Markers(tokenizer.start_id, tokenizer.delim_id, tokenizer.delim_id)


def check_specials(tokenizer: tokenizer_lib.Tokenizer, needs: str, ids: dict[str, int]) -> None:
  """A UserError unless each of `ids` (name -> id) is a special token of the tokenizer: an id of
  its vocabulary that decodes to nothing and is no other of `ids`. A SentencePiece model trained
  without gptjax's control symbols, for one, maps all of them to its unknown token."""
  for name, token_id in ids.items():
    special = (
      0 <= token_id < tokenizer.vocab_size
      and tokenizer.decode([token_id]) == ''
      and list(ids.values()).count(token_id) == 1
    )
    if not special:
      raise UserError(
        f'the {tokenizer.kind} tokenizer has no {name} token, which {needs} needs; use a '
        f'tokenizer with the special tokens {" ".join(tokenizer_lib.SPECIALS)} (every tokenizer '
        'gptjax trains or converts has them)'
      )


def transform(
  tokenizer: tokenizer_lib.Tokenizer,
  kind: str,
  example: dict,
  max_len: int,
  markers: Markers | None = None,
) -> list[list[int]]:
  """The token sequences of one example (one per row: 1, 2 for similarity, or one per choice),
  between `markers` (default GPT's)."""
  return [ids for ids, _ in segmented_rows(tokenizer, kind, example, max_len, markers)]


def segmented_rows(
  tokenizer: tokenizer_lib.Tokenizer,
  kind: str,
  example: dict,
  max_len: int,
  markers: Markers | None = None,
) -> list[tuple[list[int], int]]:
  """(token ids, positions of the first segment) of each row of one example; the first segment
  is the first marker, the first text and the delimiter (the whole row for a single text)."""
  markers = markers or gpt_markers(tokenizer)
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
    room = max_len - (2 if second is None else 3)  # beside the first, (delim,) and last markers
    if len(first_ids) + len(second_ids) > room:
      # Cut away from the delimiter: the first segment loses its start, the second its end, and
      # the second keeps at least half the room when it needs that much.
      keep_second = min(len(second_ids), max(room - len(first_ids), room // 2))
      second_ids = second_ids[:keep_second]
      first_ids = first_ids[len(first_ids) - (room - keep_second) :]
    head = [markers.first, *first_ids]
    if second is None:
      sequences.append(([*head, markers.last], len(head) + 1))
    else:
      head.append(markers.delim)
      sequences.append(([*head, *second_ids, markers.last], len(head)))
  return sequences


@dataclasses.dataclass
class Encoded:
  """A split as arrays: N examples, R rows each, L positions."""

  ids_NxRxL: np.ndarray  # int32, padded with PAD
  lengths_NxR: np.ndarray  # int32 tokens of each row; 0 for a multiple choice's missing choice
  labels_N: np.ndarray  # int32
  segments_NxRxL: np.ndarray  # int32 segment of each token: 0 (first), 1 (second); 0 at padding


def encode_split(
  tokenizer: tokenizer_lib.Tokenizer,
  kind: str,
  examples: list[dict],
  max_len: int,
  markers: Markers | None = None,
) -> Encoded:
  markers = markers or gpt_markers(tokenizer)
  encoded_rows = [
    segmented_rows(tokenizer, kind, example, max_len, markers) for example in examples
  ]
  n_rows = max(len(r) for r in encoded_rows)
  seq_len = max(len(s) for r in encoded_rows for s, _ in r)
  ids = np.full((len(encoded_rows), n_rows, seq_len), tokenizer.pad_id, np.int32)
  segments = np.zeros((len(encoded_rows), n_rows, seq_len), np.int32)
  lengths = np.zeros((len(encoded_rows), n_rows), np.int32)
  for i, example_rows in enumerate(encoded_rows):
    for r, (sequence, n_first) in enumerate(example_rows):
      ids[i, r, : len(sequence)] = sequence
      segments[i, r, n_first : len(sequence)] = 1
      lengths[i, r] = len(sequence)
  labels = np.array([e['label'] for e in examples], np.int32)
  return Encoded(ids, lengths, labels, segments)


def pad_to(encoded: Encoded, n_rows: int, seq_len: int, pad_id: int) -> Encoded:
  """The same examples in (N, n_rows, seq_len): one shape for every split, so one compilation."""
  n, rows, length = encoded.ids_NxRxL.shape
  ids = np.full((n, n_rows, seq_len), pad_id, np.int32)
  ids[:, :rows, :length] = encoded.ids_NxRxL
  segments = np.zeros((n, n_rows, seq_len), np.int32)
  segments[:, :rows, :length] = encoded.segments_NxRxL
  lengths = np.zeros((n, n_rows), np.int32)
  lengths[:, :rows] = encoded.lengths_NxR
  return Encoded(ids, lengths, encoded.labels_N, segments)


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
    'segments': encoded.segments_NxRxL[chosen],
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
