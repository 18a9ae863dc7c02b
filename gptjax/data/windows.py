"""Text in, token windows out.

  documents (stdlib source | text files | TFDS)  ->  train/validation split by document
  -> tokenizer (trained on the training split on first use)
  -> token caches WORKDIR/data/{train,val}.bin: [BOS] doc [EOS] [BOS] doc [EOS] ... as uint16/uint32
  -> training windows (batch, seq_len + 1), a pure function of (seed, step)

Everything is written once and reused when the same command runs again on the same workdir; the
machinery of that (fingerprint, meta file, load or build) is gptjax/data/cache.py's, shared with
the encoder-decoder's pair caches. This module says what the token caches hold and how batches
are cut from them.
"""

import dataclasses
import math
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from gptjax.data import cache, sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

SOURCES = ('stdlib', 'text_files', 'tfds')  # data.source values that give documents


@dataclasses.dataclass
class TokenData:
  train: np.ndarray  # uint16/uint32 token ids, memory-mapped; the first max_train_tokens only
  val: np.ndarray
  seq_len: int  # windows are seq_len + 1 tokens
  val_bytes_per_token: float  # UTF-8 bytes of validation text per validation token (for bits/byte)
  unigram_entropy: float  # nats/token of the training tokens' unigram distribution: a baseline
  # The tokenizer's vocab_size and the cache directory: a training batch holding a larger id is
  # damage, reported naming the file (0: not checked). The validation split is checked whole when
  # opened.
  vocab_size: int = 0
  data_dir: str = ''

  def train_batch(
    self, step: int, seed: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> np.ndarray:
    rows = train_batch(
      self.train, step, seed, global_batch, self.seq_len, process_index, process_count
    )
    if self.vocab_size:
      _check_ids(rows, self.vocab_size, os.path.join(self.data_dir, 'train.bin'))
    return rows

  def eval_batches(
    self, n_batches: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[np.ndarray]:
    return eval_batches(
      self.val, n_batches, global_batch, self.seq_len, process_index, process_count
    )

  @property
  def train_tokens(self) -> int:
    """The training tokens the batches are drawn from (after data.max_train_tokens)."""
    return len(self.train)

  @property
  def layout(self) -> cache.Layout:
    return LAYOUT


def row_width(config: ml_collections.ConfigDict) -> int:
  """Columns of a batch of windows: train.seq_len inputs and the one token after them."""
  return config.train.seq_len + 1


def load(config: ml_collections.ConfigDict, workdir: str, is_writer: bool = True):
  """load_tokenizer_and_data with the run config's train.seq_len: what a record's load_data is."""
  return load_tokenizer_and_data(config, workdir, config.train.seq_len, is_writer)


def load_tokenizer_and_data(
  config: ml_collections.ConfigDict, workdir: str, seq_len: int, is_writer: bool = True
) -> tuple[tokenizer_lib.Tokenizer, TokenData]:
  """The tokenizer and token caches of `workdir`, made on first use (gptjax/data/cache.py).

  Only the process with is_writer (process 0) trains and writes; in a multi-host run the others
  call this after a barrier and find the files there.
  """
  tokenizer, meta = cache.load_or_build(LAYOUT, config, workdir, is_writer)
  data_dir = os.path.join(workdir, 'data')
  if meta['dtype'] not in ('uint16', 'uint32'):
    raise _damaged(os.path.join(data_dir, LAYOUT.meta_file), f'its dtype is {meta["dtype"]!r}')
  dtype = np.dtype(meta['dtype'])
  for name in LAYOUT.files:
    path, recorded = os.path.join(data_dir, name), meta[f'{name.split(".")[0]}_tokens']
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size is None or size % dtype.itemsize or size // dtype.itemsize != recorded:
      found = 'it is missing' if size is None else f'it has {size} bytes'
      raise _damaged(path, f'{found}; {LAYOUT.meta_file} records {recorded} {dtype.name} tokens')
  train = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=dtype, mode='r')
  val = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=dtype, mode='r')
  _check_ids(val, tokenizer.vocab_size, os.path.join(data_dir, 'val.bin'))  # whole: it is small
  if config.data.max_train_tokens > 0:
    train = train_subset(train, config.data.max_train_tokens, config.data.train_subset)
  for split, tokens in (('training', train), ('validation', val)):
    if len(tokens) < seq_len + 1:
      raise UserError(
        f'the {split} split has {len(tokens)} tokens, fewer than one sequence of '
        f'seq_len + 1 = {seq_len + 1}; use more data or a shorter seq_len'
      )
  return tokenizer, TokenData(
    train=train,
    val=val,
    seq_len=seq_len,
    val_bytes_per_token=meta['val_bytes'] / meta['val_tokens'],
    unigram_entropy=meta['unigram_entropy'],
    vocab_size=tokenizer.vocab_size,
    data_dir=data_dir,
  )


def _check_ids(tokens: np.ndarray, vocab_size: int, path: str) -> None:
  """Raises a damage UserError naming `path` when `tokens` holds an id past the vocabulary."""
  largest = int(tokens.max()) if tokens.size else 0
  if largest >= vocab_size:
    raise _damaged(
      path, f"it holds token id {largest}, past the tokenizer's vocab_size {vocab_size}"
    )


def _damaged(path: str, problem: str) -> UserError:
  data_dir = os.path.dirname(path)
  return UserError(
    f'{path} is damaged ({problem}); delete {os.path.join(data_dir, LAYOUT.meta_file)} and the '
    f'next gptjax.main run rebuilds the token cache in {data_dir} from the data source, or put '
    'the original back'
  )


def _describe(data: ml_collections.ConfigDict) -> str:
  if data.source == 'tfds':
    return f'tfds:{data.tfds_name}'
  return 'stdlib' if data.source == 'stdlib' else f'text_files:{data.text_files}'


def _write_caches(
  tokenizer: tokenizer_lib.Tokenizer,
  train_docs: list[sources.Document],
  val_docs: list[sources.Document],
  data_dir: str,
) -> dict:
  """Writes train.bin and val.bin; returns their meta entries (dtype, token and byte counts, the
  training tokens' unigram entropy)."""
  dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
  counts = np.zeros(tokenizer.vocab_size, np.int64)
  meta = {'dtype': np.dtype(dtype).name}
  for split, docs in (('train', train_docs), ('val', val_docs)):
    n_tokens = 0
    with cache.atomic_path(os.path.join(data_dir, f'{split}.bin')) as tmp, open(tmp, 'wb') as f:
      for start in range(0, len(docs), 256):
        texts = [text for _, text in docs[start : start + 256]]
        for ids in tokenizer.encode_batch(texts):
          tokens = np.array([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype)
          tokens.tofile(f)
          n_tokens += len(tokens)
          if split == 'train':
            counts += np.bincount(tokens, minlength=tokenizer.vocab_size)
    meta[f'{split}_tokens'] = n_tokens
    meta[f'{split}_bytes'] = sum(len(text.encode('utf-8')) for _, text in docs)
  if meta['train_tokens'] == 0 or meta['val_bytes'] == 0:
    raise UserError(
      f'the corpus split gives {meta["train_tokens"]} training tokens and '
      f'{meta["val_bytes"]} validation bytes; it needs both (more or larger '
      'documents)'
    )
  p = counts[counts > 0] / counts.sum()
  meta['unigram_entropy'] = float(-(p * np.log(p)).sum())
  return meta


LAYOUT = cache.Layout(
  what='token cache',
  meta_file='meta.json',
  files=('train.bin', 'val.bin'),
  split=sources.split_documents,
  texts=lambda docs: (text for _, text in docs),
  write=_write_caches,
  describe=_describe,
  keys=('dtype', 'train_tokens', 'val_tokens', 'val_bytes', 'unigram_entropy'),
)


def train_batch(
  tokens: np.ndarray,
  step: int,
  seed: int,
  global_batch: int,
  seq_len: int,
  process_index: int = 0,
  process_count: int = 1,
) -> np.ndarray:
  """This process's rows of the global batch for `step`: int32 (global_batch / process_count,
  seq_len + 1) windows at uniformly random offsets. A pure function of (seed, step), so a resumed
  run sees exactly the batches an uninterrupted one would have."""
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(tokens) - seq_len, size=global_batch)
  rows = global_batch // process_count
  return _windows(tokens, starts[process_index * rows : (process_index + 1) * rows], seq_len)


def eval_batches(
  tokens: np.ndarray,
  n_batches: int,
  global_batch: int,
  seq_len: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[np.ndarray]:
  """The same validation windows every time: the seq_len-token windows that tile the split, the
  ones evaluation_items picks."""
  rows = global_batch // process_count
  for window in evaluation_items((len(tokens) - 1) // seq_len, n_batches, global_batch):
    local = window[process_index * rows : (process_index + 1) * rows]
    yield _windows(tokens, local * seq_len, seq_len)


def evaluation_items(n_items: int, n_batches: int, global_batch: int) -> list[np.ndarray]:
  """Which of a validation split's n_items (windows, or an encoder-decoder's rows) each of
  n_batches evaluation batches holds: n_batches * global_batch items spread evenly over the split,
  each batch a run of neighbours (so that batch means vary as regions of the split do, and their
  spread gives an honest standard error). n_batches = 0: every whole batch the split fills, which
  is all of it but fewer than global_batch items. A split with fewer items than asked for is read
  whole and wraps around."""
  if n_batches == 0:
    n_batches = max(1, n_items // global_batch)
  wanted = n_batches * global_batch
  if wanted >= n_items:
    items = np.arange(wanted) % n_items
  else:
    items = np.arange(wanted) * n_items // wanted
  return [items[b * global_batch : (b + 1) * global_batch] for b in range(n_batches)]


# A spread subset's pieces: long enough that few windows straddle two, short enough that even the
# smallest subsets of a scaling study (1e5 tokens) come from many places.
SUBSET_CHUNK = 4096


def train_subset(train: np.ndarray, tokens: int, how: str) -> np.ndarray:
  """The `tokens` training tokens a data-limited run draws from: the first ones ('first'), or
  ('spread') SUBSET_CHUNK-token pieces at evenly spaced places over the whole split, so that a
  small subset samples the corpus as a large one does (the documents are in path order, so the
  first tokens are a few modules). Either is the whole split if it has no more tokens."""
  if tokens >= len(train):
    return train
  if how == 'first':
    return train[:tokens]
  pieces = math.ceil(tokens / SUBSET_CHUNK)
  starts = np.arange(pieces) * (len(train) - SUBSET_CHUNK) // max(1, pieces - 1)
  subset = np.concatenate([train[s : s + SUBSET_CHUNK] for s in starts])
  return subset[:tokens]


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
  return np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int32)


def bits_per_byte(loss_nats_per_token: float, bytes_per_token: float) -> float:
  return loss_nats_per_token / bytes_per_token / math.log(2)
