"""(source, target) pairs for the encoder-decoder Transformer, as rows the GPT training loop takes.

  pairs (stdlib docstrings | JSONL files | TFDS)  ->  train/validation split
  -> tokenizer (one vocabulary for both sides, trained on the training sources and targets)
  -> caches WORKDIR/data/pairs_{train,val}.npy: one int32 row of source_len + target_len + 1
     tokens per pair,
       [source ids, EOS, pad, ...] (source_len) | [BOS, target ids, EOS, pad, ...] (target_len + 1)
     A side that fits ends in EOS; a longer side is cut and gets no EOS, so the model never learns
     to stop where a text was merely truncated. The decoder reads row[:, source_len:-1] and
     predicts row[:, source_len + 1:]; a pad_id label carries no loss.
     Also pairs_val.jsonl (the validation pairs as text, for scoring generated targets) and
     pairs_meta.json (fingerprint of the settings, pair counts and length statistics).
  -> batches of rows, a pure function of (seed, step)

Written once per workdir by the writer process and reused when the same command runs again; the
machinery of that (fingerprint, meta file, load or build) is gptjax/data/cache.py's, shared with
the language models' token caches. This module says what the rows are and how they are encoded.
The stdlib_docstrings pairs are gptjax/data/docstrings.py's.
"""

import dataclasses
import functools
import glob
import json
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from gptjax.data import cache, docstrings, sources, windows
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

Pair = docstrings.Pair  # (source, target)
SOURCES = ('stdlib_docstrings', 'pairs_jsonl', 'tfds')


def jsonl_pairs(pattern: str, source_key: str = 'source', target_key: str = 'target') -> list[Pair]:
  """The pairs of every JSONL file matching a glob (sorted by path), one object per line; blank
  lines are skipped, other fields ignored."""
  paths = sorted(
    p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p)
  )
  if not paths:
    raise UserError(f'data.pairs_files={pattern!r} matches no files')
  pairs = []
  for path in paths:
    with open(path, 'rb') as f:
      lines = sources.decode_or_warn(f.read(), path).split('\n')
    for where, record in sources.jsonl_objects(lines, path):
      for key in (source_key, target_key):
        if key not in record:
          raise UserError(
            f'{where}: no field {key!r} (data.source_key / data.target_key name '
            f'the fields; this line has {sorted(record)})'
          )
        if not isinstance(record[key], str):
          raise UserError(
            f'{where}: field {key!r} must be a string, got {type(record[key]).__name__}'
          )
      pairs.append((record[source_key], record[target_key]))
  return pairs


def split_by_source_hash(pairs: list[Pair], val_fraction: float) -> tuple[list[Pair], list[Pair]]:
  """Holds out the val_fraction of pairs (at least one) with the smallest crc32 of their source
  (sources.split_by_hash); equal sources sort together. Both sides keep the input order."""
  return sources.split_by_hash(pairs, [source for source, _ in pairs], val_fraction)


def tfds_pairs(
  name: str, split: str, source_key: str, target_key: str, data_dir: str | None
) -> list[Pair]:
  """The (source_key, target_key) features of a TFDS dataset's split, prepared in ArrayRecord
  format (read with tfds.data_source, no TF)."""
  return [
    (sources.as_text(record[source_key]), sources.as_text(record[target_key]))
    for record in sources.tfds_records(name, split, data_dir, (source_key, target_key))
  ]


def split_pairs(data: ml_collections.ConfigDict) -> tuple[list[Pair], list[Pair]]:
  """(train, validation) pairs of the configured source; the first max_documents training pairs
  when that is set."""
  if data.source == 'stdlib_docstrings':
    train, val = docstrings.stdlib_pairs(data.val_fraction)
  elif data.source == 'pairs_jsonl':
    pairs = jsonl_pairs(data.pairs_files, data.source_key, data.target_key)
    train, val = split_by_source_hash(pairs, data.val_fraction)
  elif data.source == 'tfds':
    train, val = (
      tfds_pairs(data.tfds_name, split, data.source_key, data.target_key, data.tfds_data_dir)
      for split in (data.tfds_train_split, data.tfds_eval_split)
    )
  else:
    raise UserError(
      f'unknown data.source {data.source!r} for pairs; use one of {", ".join(SOURCES)}'
    )
  if data.max_documents > 0:
    train = train[: data.max_documents]
  if not train or not val:
    raise UserError(
      f'the {data.source} pairs split into {len(train)} training and {len(val)} '
      'validation pairs; it needs both (more data, or another val_fraction)'
    )
  return train, val


def encode_pairs(
  tokenizer: tokenizer_lib.Tokenizer, pairs: list[Pair], source_len: int, target_len: int
) -> tuple[np.ndarray, np.ndarray]:
  """int32 rows (len(pairs), source_len + target_len + 1) laid out as in the module docstring,
  and each pair's (source, target) token counts before cutting, int64 (len(pairs), 2)."""
  rows = np.full((len(pairs), source_len + target_len + 1), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(pairs), 2), np.int64)
  sources = tokenizer.encode_batch([source for source, _ in pairs])
  targets = tokenizer.encode_batch([target for _, target in pairs])
  for i, (source, target) in enumerate(zip(sources, targets)):
    lengths[i] = len(source), len(target)
    source = [*source, tokenizer.eos_id] if len(source) < source_len else source[:source_len]
    target = (
      [tokenizer.bos_id, *target, tokenizer.eos_id]
      if len(target) < target_len
      else [tokenizer.bos_id, *target[:target_len]]
    )
    rows[i, : len(source)] = source
    rows[i, source_len : source_len + len(target)] = target
  return rows, lengths


def split_row(batch: np.ndarray, source_len: int) -> tuple[np.ndarray, np.ndarray]:
  """(sources (B, source_len), targets (B, target_len + 1)) of a batch of rows."""
  return batch[:, :source_len], batch[:, source_len:]


@dataclasses.dataclass
class PairData:
  train: np.ndarray  # int32 (N_train, source_len + target_len + 1) rows, memory-mapped
  val: np.ndarray
  source_len: int
  target_len: int
  pad_id: int
  stats: dict = dataclasses.field(default_factory=dict)  # per split: pairs, lengths, cut shares

  def train_batch(
    self, step: int, seed: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> np.ndarray:
    """This process's rows of the global batch for `step`: global_batch rows drawn uniformly (with
    replacement). A pure function of (seed, step), so a resumed run sees the same batches."""
    rows = np.random.default_rng([seed, step]).integers(0, len(self.train), size=global_batch)
    return _share(self.train, rows, process_index, process_count)

  def eval_batches(
    self, n_batches: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[np.ndarray]:
    """The same validation rows every time (windows.evaluation_items's), this process's share of
    each batch."""
    for rows in windows.evaluation_items(len(self.val), n_batches, global_batch):
      yield _share(self.val, rows, process_index, process_count)

  @functools.cached_property
  def train_tokens(self) -> int:
    """The target tokens of the training rows that carry loss (the labels that are not padding):
    what a sweep's D counts, target tokens, not the sources the encoder reads."""
    labels = slice(self.source_len + 1, None)
    return sum(
      int(np.count_nonzero(self.train[start : start + 65536, labels] != self.pad_id))
      for start in range(0, len(self.train), 65536)
    )

  @property
  def layout(self) -> cache.Layout:
    return LAYOUT


def _share(
  table: np.ndarray, rows: np.ndarray, process_index: int, process_count: int
) -> np.ndarray:
  """Process p's contiguous share of `rows` of `table`: rows[p * n / P:(p + 1) * n / P]."""
  n = len(rows)
  local = rows[process_index * n // process_count : (process_index + 1) * n // process_count]
  return np.asarray(table[local], np.int32)


def lengths(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(source_len, target_len) of a run config: the one place that says where they are set."""
  return config.encoder_decoder.source_len, config.train.seq_len


def load_tokenizer_and_pairs(
  config: ml_collections.ConfigDict, workdir: str, is_writer: bool = True
) -> tuple[tokenizer_lib.Tokenizer, PairData]:
  """The tokenizer and pair caches of `workdir`, made on first use (gptjax/data/cache.py), with
  the lengths(config).

  Only the process with is_writer (process 0) trains and writes; in a multi-host run the others
  call this after a barrier and find the files there.
  """
  source_len, target_len = lengths(config)
  if source_len < 1 or target_len < 1:
    raise UserError(
      f'encoder_decoder.source_len ({source_len}) and train.seq_len ({target_len}) must be positive'
    )
  tokenizer, meta = cache.load_or_build(LAYOUT, config, workdir, is_writer)
  data_dir = os.path.join(workdir, 'data')
  return tokenizer, PairData(
    train=np.load(os.path.join(data_dir, 'pairs_train.npy'), mmap_mode='r'),
    val=np.load(os.path.join(data_dir, 'pairs_val.npy'), mmap_mode='r'),
    source_len=source_len,
    target_len=target_len,
    pad_id=tokenizer.pad_id,
    stats={split: meta[split] for split in ('train', 'val')},
  )


def validation_pairs(config: ml_collections.ConfigDict, workdir: str) -> list[Pair]:
  """The validation pairs as text, in the order of PairData.val's rows (for scoring generated
  targets against the references)."""
  data_dir = os.path.join(workdir, 'data')
  if cache.read_meta(LAYOUT, config, workdir) is None:
    raise UserError(f'no pair cache in {data_dir}; load_tokenizer_and_pairs makes it')
  with open(os.path.join(data_dir, 'pairs_val.jsonl'), encoding='utf-8') as f:
    return [tuple(json.loads(line)) for line in f]


def _describe(data: ml_collections.ConfigDict) -> str:
  if data.source == 'tfds':
    return f'tfds:{data.tfds_name}:{data.source_key}->{data.target_key}'
  if data.source == 'pairs_jsonl':
    return f'pairs_jsonl:{data.pairs_files}'
  return data.source


def _write_caches(
  tokenizer: tokenizer_lib.Tokenizer,
  train: list[Pair],
  val: list[Pair],
  data_dir: str,
  source_len: int,
  target_len: int,
) -> dict:
  """Writes pairs_train.npy, pairs_val.npy and pairs_val.jsonl; returns the meta entries: per
  split, the pair count and length statistics."""
  meta = {}
  for split, pairs in (('train', train), ('val', val)):
    with cache.atomic_path(os.path.join(data_dir, f'pairs_{split}.npy')) as tmp:
      # Filled in blocks straight into the file: millions of pairs never sit in memory as lists.
      rows = np.lib.format.open_memmap(
        tmp, mode='w+', dtype=np.int32, shape=(len(pairs), source_len + target_len + 1)
      )
      lengths_Nx2 = np.zeros((len(pairs), 2), np.int64)
      for start in range(0, len(pairs), 1024):
        block = slice(start, start + 1024)
        rows[block], lengths_Nx2[block] = encode_pairs(
          tokenizer, pairs[block], source_len, target_len
        )
      rows.flush()
      del rows
    meta[split] = _length_stats(lengths_Nx2, source_len, target_len)
  cache.write_atomic(
    os.path.join(data_dir, 'pairs_val.jsonl'), ''.join(json.dumps(pair) + '\n' for pair in val)
  )
  return meta


def _length_stats(lengths: np.ndarray, source_len: int, target_len: int) -> dict:
  """Pair count, token-length percentiles and the share of sources / targets cut (no EOS)."""
  stats = {'pairs': len(lengths)}
  for column, side, limit in ((0, 'source', source_len), (1, 'target', target_len)):
    stats[f'{side}_tokens_p50_p90_p99'] = [
      round(float(np.percentile(lengths[:, column], q)), 1) for q in (50, 90, 99)
    ]
    stats[f'{side}_cut'] = float(np.mean(lengths[:, column] >= limit))
  return stats


LAYOUT = cache.Layout(
  what='pair cache',
  meta_file='pairs_meta.json',
  files=('pairs_train.npy', 'pairs_val.npy', 'pairs_val.jsonl'),
  split=split_pairs,
  texts=lambda pairs: (text for pair in pairs for text in pair),
  write=_write_caches,
  describe=_describe,
  lengths=lambda config: dict(zip(('source_len', 'target_len'), lengths(config))),
  keys=('train', 'val'),
)
