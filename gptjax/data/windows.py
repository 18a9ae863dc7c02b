"""Text in, token windows out.

  documents (stdlib source | text files | TFDS)  ->  train/validation split by document
  -> tokenizer (trained on the training split on first use)
  -> token caches WORKDIR/data/{train,val}.bin: [BOS] doc [EOS] [BOS] doc [EOS] ... as uint16/uint32
  -> training windows (batch, seq_len + 1), a pure function of (seed, step)

Everything is written once and reused when the same command runs again on the same workdir.
"""
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from gptjax.data import sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError


@dataclasses.dataclass
class TokenData:
  train: np.ndarray  # uint16/uint32 token ids, memory-mapped; the first max_train_tokens only
  val: np.ndarray
  seq_len: int  # windows are seq_len + 1 tokens
  val_bytes_per_token: float  # UTF-8 bytes of validation text per validation token (for bits/byte)
  unigram_entropy: float  # nats/token of the training tokens' unigram distribution: a baseline

  def train_batch(self, step: int, seed: int, global_batch: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
    return train_batch(self.train, step, seed, global_batch, self.seq_len, process_index,
                       process_count)

  def eval_batches(self, n_batches: int, global_batch: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[np.ndarray]:
    return eval_batches(self.val, n_batches, global_batch, self.seq_len, process_index,
                        process_count)


def load_tokenizer_and_data(config: ml_collections.ConfigDict, workdir: str, seq_len: int,
                            is_writer: bool = True) -> tuple[tokenizer_lib.Tokenizer, TokenData]:
  """The tokenizer and token caches of `workdir`, made on first use.

  Only the process with is_writer (process 0) trains and writes; in a multi-host run the others
  call this after a barrier and find the files there.
  """
  data_dir = os.path.join(workdir, 'data')
  meta_path = os.path.join(data_dir, 'meta.json')
  source_id = _source_id(config.data, config.tokenizer)
  meta = None
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if meta['source_id'] != source_id:
      raise UserError(f'{data_dir} was built from different data or tokenizer settings '
                      f'({meta["source"]}); use a new workdir')
  if meta is None and not is_writer:
    raise UserError(f'no token cache in {data_dir} (process 0 should have written it)')
  train_docs = val_docs = None
  if meta is None:
    train_docs, val_docs = sources.split_documents(config.data)
  tokenizer = tokenizer_lib.load_or_train(
      config.tokenizer.kind, config.tokenizer.vocab_size, workdir,
      None if train_docs is None else (text for _, text in train_docs))
  if meta is None:
    meta = _write_caches(tokenizer, train_docs, val_docs, data_dir, source_id,
                         _describe(config.data))
  dtype = np.dtype(meta['dtype'])
  train = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=dtype, mode='r')
  val = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=dtype, mode='r')
  if config.data.max_train_tokens > 0:
    train = train[:config.data.max_train_tokens]
  for split, tokens in (('training', train), ('validation', val)):
    if len(tokens) < seq_len + 1:
      raise UserError(f'the {split} split has {len(tokens)} tokens, fewer than one sequence of '
                      f'seq_len + 1 = {seq_len + 1}; use more data or a shorter seq_len')
  return tokenizer, TokenData(train=train, val=val, seq_len=seq_len,
                              val_bytes_per_token=meta['val_bytes'] / meta['val_tokens'],
                              unigram_entropy=meta['unigram_entropy'])


def _describe(data: ml_collections.ConfigDict) -> str:
  if data.source == 'tfds':
    return f'tfds:{data.tfds_name}'
  return 'stdlib' if data.source == 'stdlib' else f'text_files:{data.text_files}'


def _source_id(data: ml_collections.ConfigDict, tok: ml_collections.ConfigDict) -> str:
  """Fingerprint of every setting that changes the token caches (max_train_tokens does not)."""
  relevant = {k: v for k, v in data.to_dict().items() if k != 'max_train_tokens'}
  relevant['tokenizer'] = tok.to_dict()
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _write_caches(tokenizer: tokenizer_lib.Tokenizer, train_docs: list[sources.Document],
                  val_docs: list[sources.Document], data_dir: str, source_id: str, source: str) -> dict:
  os.makedirs(data_dir, exist_ok=True)
  dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
  counts = np.zeros(tokenizer.vocab_size, np.int64)
  meta = {'source': source, 'source_id': source_id, 'dtype': np.dtype(dtype).name}
  for split, docs in (('train', train_docs), ('val', val_docs)):
    n_tokens = 0
    tmp = os.path.join(data_dir, f'{split}.bin.tmp')
    with open(tmp, 'wb') as f:
      for start in range(0, len(docs), 256):
        texts = [text for _, text in docs[start:start + 256]]
        for ids in tokenizer.encode_batch(texts):
          tokens = np.array([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype)
          tokens.tofile(f)
          n_tokens += len(tokens)
          if split == 'train':
            counts += np.bincount(tokens, minlength=tokenizer.vocab_size)
    os.replace(tmp, os.path.join(data_dir, f'{split}.bin'))
    meta[f'{split}_tokens'] = n_tokens
    meta[f'{split}_bytes'] = sum(len(text.encode('utf-8')) for _, text in docs)
  if meta['train_tokens'] == 0 or meta['val_bytes'] == 0:
    raise UserError(f'the corpus split gives {meta["train_tokens"]} training tokens and '
                    f'{meta["val_bytes"]} validation bytes; it needs both (more or larger documents)')
  p = counts[counts > 0] / counts.sum()
  meta['unigram_entropy'] = float(-(p * np.log(p)).sum())
  with open(os.path.join(data_dir, 'meta.json.tmp'), 'w') as f:
    json.dump(meta, f, indent=1)
  os.replace(os.path.join(data_dir, 'meta.json.tmp'), os.path.join(data_dir, 'meta.json'))
  return meta


def train_batch(tokens: np.ndarray, step: int, seed: int, global_batch: int, seq_len: int,
                process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This process's rows of the global batch for `step`: int32 (global_batch / process_count,
  seq_len + 1) windows at uniformly random offsets. A pure function of (seed, step), so a resumed
  run sees exactly the batches an uninterrupted one would have."""
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(tokens) - seq_len, size=global_batch)
  rows = global_batch // process_count
  return _windows(tokens, starts[process_index * rows:(process_index + 1) * rows], seq_len)


def eval_batches(tokens: np.ndarray, n_batches: int, global_batch: int, seq_len: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[np.ndarray]:
  """The same validation windows every time: consecutive seq_len-token windows from the start of
  the validation split (wrapping around when it is shorter than n_batches * global_batch)."""
  n_windows = (len(tokens) - 1) // seq_len
  rows = global_batch // process_count
  for b in range(n_batches):
    window = np.arange(b * global_batch, (b + 1) * global_batch) % n_windows
    local = window[process_index * rows:(process_index + 1) * rows]
    yield _windows(tokens, local * seq_len, seq_len)


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
  return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int32)


def bits_per_byte(loss_nats_per_token: float, bytes_per_token: float) -> float:
  return loss_nats_per_token / bytes_per_token / math.log(2)
