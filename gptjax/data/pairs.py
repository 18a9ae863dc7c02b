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

Written once per workdir by the writer process and reused when the same command runs again.

The stdlib_docstrings task: for every function and method of the running Python's standard library
that has a docstring, the source is its code (decorators included, docstring removed, dedented)
and the target is the docstring's first sentence. Functions whose body is only the docstring, whose
docstring shares a line with other code, or whose target is under 3 words are left out; identical
pairs are kept once. Whole modules are held out for validation, so no function of a validation
module is seen in training. Measured on Python 3.11.7 (2 CPU cores, 4096-piece SentencePiece):

  1790 modules, 678 with pairs; 58754 functions, 8510 with a docstring -> 8013 pairs
  train / validation pairs: 7867 / 81 (14 modules) with val_fraction 0.02, 7619 / 329 with 0.05,
  7222 / 726 with 0.1
  training tokens, median / p90 / p99: source 67 / 318 / 1017, target 13 / 24 / 48
  sources cut at source_len 128 / 256 / 512: 31% / 14% / 4.5%
  targets cut at seq_len 32 / 64: 4.7% / 0.5%
  building the caches takes ~25 s (parsing ~16 s, then the tokenizer), once per workdir
"""
import ast
import dataclasses
import glob
import hashlib
import json
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator

import ml_collections
import numpy as np

from gptjax.data import sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

Pair = tuple[str, str]  # (source, target)
SOURCES = ('stdlib_docstrings', 'pairs_jsonl', 'tfds')


def first_sentence(docstring: str) -> str:
  """The first sentence of the first paragraph, whitespace collapsed, with its final period."""
  paragraph = re.split(r'\n\s*\n', docstring.strip(), maxsplit=1)[0]
  text = ' '.join(paragraph.split())
  end = text.find('. ')
  return text if end < 0 else text[:end + 1]


def docstring_pairs(module_source: str) -> list[Pair]:
  """(code without its docstring, first sentence of the docstring) for each function and method
  of one module's source, in source order. A module that does not parse gives none."""
  # ast counts only \n, \r\n and \r as line ends (str.splitlines also splits at form feeds).
  module_source = module_source.replace('\r\n', '\n').replace('\r', '\n')
  try:
    with warnings.catch_warnings():  # old code's invalid escape sequences warn, harmlessly
      warnings.simplefilter('ignore')
      tree = ast.parse(module_source)
  except (SyntaxError, ValueError, RecursionError):  # the stdlib tests hold deliberately bad code
    return []
  lines = module_source.split('\n')
  pairs = []
  for node in _functions(tree):
    docstring = ast.get_docstring(node)
    if docstring is None or len(node.body) < 2:  # no docstring, or nothing but one
      continue
    source, target = _code_without_docstring(node, lines), first_sentence(docstring)
    if source and len(target.split()) >= 3:
      pairs.append((source, target))
  return pairs


def _functions(node: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
  """Every function under `node`, in source order. Only statements can define one, so expressions
  (most of a tree's nodes) are never visited: this halves the time of a pass over the stdlib."""
  for _, value in ast.iter_fields(node):
    if isinstance(value, list):
      for child in value:
        if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
          if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield child
          yield from _functions(child)


def _code_without_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str:
  """The function's lines from its first decorator, less the docstring's, without the def's
  indentation; '' when the docstring shares a line with other code."""
  doc = node.body[0]
  # Column offsets count UTF-8 bytes.
  before = lines[doc.lineno - 1].encode()[:doc.col_offset]
  after = lines[doc.end_lineno - 1].encode()[doc.end_col_offset:]
  if before.strip() or after.strip():
    return ''
  first = min([node.lineno] + [d.lineno for d in node.decorator_list])
  kept = lines[first - 1:doc.lineno - 1] + lines[doc.end_lineno:node.end_lineno]
  indent = kept[0][:len(kept[0]) - len(kept[0].lstrip())]
  # Strip the def's own indentation only (textwrap.dedent would give up on a multi-line string
  # that starts at column 0 inside the function).
  dedented = (line[len(indent):] if line.startswith(indent) else line for line in kept)
  return '\n'.join(dedented).rstrip()


def split_by_module(modules: list[tuple[str, list[Pair]]],
                    val_fraction: float) -> tuple[list[Pair], list[Pair]]:
  """(train, validation) pairs of (module name, pairs) lists: the val_fraction of the modules that
  have pairs (at least one) with the smallest crc32 of their name are held out, as
  data.split_documents does. Each pair is kept once, and validation drops pairs training has."""
  modules = [(name, pairs) for name, pairs in modules if pairs]
  n_val = max(1, round(val_fraction * len(modules)))
  by_hash = sorted(range(len(modules)), key=lambda i: (zlib.crc32(modules[i][0].encode()), i))
  is_val = set(by_hash[:n_val])
  train = _unique(p for i, (_, pairs) in enumerate(modules) if i not in is_val for p in pairs)
  in_train = set(train)
  val = _unique(p for i in sorted(is_val) for p in modules[i][1] if p not in in_train)
  return train, val


def _unique(pairs: Iterable[Pair]) -> list[Pair]:
  return list(dict.fromkeys(pairs))


def jsonl_pairs(pattern: str, source_key: str = 'source', target_key: str = 'target') -> list[Pair]:
  """The pairs of every JSONL file matching a glob (sorted by path), one object per line; blank
  lines are skipped, other fields ignored."""
  paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                 if os.path.isfile(p))
  if not paths:
    raise UserError(f'data.pairs_files={pattern!r} matches no files')
  pairs = []
  for path in paths:
    with open(path, encoding='utf-8', errors='replace') as f:
      for where, record in sources.jsonl_objects(f, path):
        for key in (source_key, target_key):
          if key not in record:
            raise UserError(f'{where}: no field {key!r} (data.source_key / data.target_key name '
                            f'the fields; this line has {sorted(record)})')
          if not isinstance(record[key], str):
            raise UserError(f'{where}: field {key!r} must be a string, got '
                            f'{type(record[key]).__name__}')
        pairs.append((record[source_key], record[target_key]))
  return pairs


def split_by_source_hash(pairs: list[Pair], val_fraction: float) -> tuple[list[Pair], list[Pair]]:
  """Holds out the val_fraction of pairs (at least one) with the smallest crc32 of their source;
  equal sources land on the same side. Both sides keep the input order."""
  n_val = max(1, round(val_fraction * len(pairs)))
  by_hash = sorted(range(len(pairs)), key=lambda i: (zlib.crc32(pairs[i][0].encode()), i))
  is_val = set(by_hash[:n_val])
  return ([p for i, p in enumerate(pairs) if i not in is_val], [pairs[i] for i in sorted(is_val)])


def tfds_pairs(name: str, split: str, source_key: str, target_key: str,
               data_dir: str | None) -> list[Pair]:
  """The (source_key, target_key) features of a TFDS dataset's split, prepared in ArrayRecord
  format (read with tfds.data_source, no TF)."""
  source = sources.tfds_source(name, split, data_dir)
  pairs = []
  for start in range(0, len(source), 1024):
    # Reading records in blocks is much faster than one by one on millions of them.
    for record in source.__getitems__(range(start, min(start + 1024, len(source)))):
      for key in (source_key, target_key):
        if key not in record:
          raise UserError(f'TFDS {name} has no feature {key!r}; it has {sorted(record)}')
      pairs.append((_text(record[source_key]), _text(record[target_key])))
  return pairs


def _text(value: bytes | str) -> str:
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


def split_pairs(data: ml_collections.ConfigDict) -> tuple[list[Pair], list[Pair]]:
  """(train, validation) pairs of the configured source; the first max_documents training pairs
  when that is set."""
  if data.source == 'stdlib_docstrings':
    modules = [(name, docstring_pairs(text)) for name, text in sources.stdlib_documents()]
    train, val = split_by_module(modules, data.val_fraction)
  elif data.source == 'pairs_jsonl':
    pairs = jsonl_pairs(data.pairs_files, data.source_key, data.target_key)
    train, val = split_by_source_hash(pairs, data.val_fraction)
  elif data.source == 'tfds':
    train, val = (tfds_pairs(data.tfds_name, split, data.source_key, data.target_key,
                             data.tfds_data_dir)
                  for split in (data.tfds_train_split, data.tfds_eval_split))
  else:
    raise UserError(f'unknown data.source {data.source!r} for pairs; use one of '
                    f'{", ".join(SOURCES)}')
  if data.max_documents > 0:
    train = train[:data.max_documents]
  if not train or not val:
    raise UserError(f'the {data.source} pairs split into {len(train)} training and {len(val)} '
                    'validation pairs; it needs both (more data, or another val_fraction)')
  return train, val


def encode_pairs(tokenizer: tokenizer_lib.Tokenizer, pairs: list[Pair], source_len: int,
                 target_len: int) -> tuple[np.ndarray, np.ndarray]:
  """int32 rows (len(pairs), source_len + target_len + 1) laid out as in the module docstring,
  and each pair's (source, target) token counts before cutting, int64 (len(pairs), 2)."""
  rows = np.full((len(pairs), source_len + target_len + 1), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(pairs), 2), np.int64)
  sources = tokenizer.encode_batch([source for source, _ in pairs])
  targets = tokenizer.encode_batch([target for _, target in pairs])
  for i, (source, target) in enumerate(zip(sources, targets)):
    lengths[i] = len(source), len(target)
    source = [*source, tokenizer.eos_id] if len(source) < source_len else source[:source_len]
    target = ([tokenizer.bos_id, *target, tokenizer.eos_id] if len(target) < target_len else
              [tokenizer.bos_id, *target[:target_len]])
    rows[i, :len(source)] = source
    rows[i, source_len:source_len + len(target)] = target
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

  def train_batch(self, step: int, seed: int, global_batch: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
    """This process's rows of the global batch for `step`: global_batch rows drawn uniformly (with
    replacement). A pure function of (seed, step), so a resumed run sees the same batches."""
    rows = np.random.default_rng([seed, step]).integers(0, len(self.train), size=global_batch)
    return _share(self.train, rows, process_index, process_count)

  def eval_batches(self, n_batches: int, global_batch: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[np.ndarray]:
    """The same validation rows every time: the first n_batches * global_batch rows (wrapping
    around a shorter validation split), this process's share of each batch."""
    for b in range(n_batches):
      rows = np.arange(b * global_batch, (b + 1) * global_batch) % len(self.val)
      yield _share(self.val, rows, process_index, process_count)


def _share(table: np.ndarray, rows: np.ndarray, process_index: int,
           process_count: int) -> np.ndarray:
  """Process p's contiguous share of `rows` of `table`: rows[p * n / P:(p + 1) * n / P]."""
  n = len(rows)
  local = rows[process_index * n // process_count:(process_index + 1) * n // process_count]
  return np.asarray(table[local], np.int32)


def load_tokenizer_and_pairs(config: ml_collections.ConfigDict, workdir: str,
                             is_writer: bool = True) -> tuple[tokenizer_lib.Tokenizer, PairData]:
  """The tokenizer and pair caches of `workdir`, made on first use; source_len is
  config.train.source_len and target_len config.train.seq_len.

  Only the process with is_writer (process 0) trains and writes; in a multi-host run the others
  call this after a barrier and find the files there.
  """
  source_len, target_len = config.train.source_len, config.train.seq_len
  if source_len < 1 or target_len < 1:
    raise UserError(f'train.source_len ({source_len}) and train.seq_len ({target_len}) must be '
                    'positive')
  data_dir = os.path.join(workdir, 'data')
  source_id = _source_id(config, source_len, target_len)
  meta = _read_meta(data_dir, source_id)
  if meta is None and not is_writer:
    raise UserError(f'no pair cache in {data_dir} (process 0 should have written it)')
  train = val = None
  if meta is None:
    train, val = split_pairs(config.data)
  tokenizer = tokenizer_lib.load_or_train(
      config.tokenizer.kind, config.tokenizer.vocab_size, workdir,
      None if train is None else (text for pair in train for text in pair))
  if meta is None:
    meta = _write_caches(tokenizer, train, val, data_dir, source_id, _describe(config.data),
                         source_len, target_len)
  return tokenizer, PairData(
      train=np.load(os.path.join(data_dir, 'pairs_train.npy'), mmap_mode='r'),
      val=np.load(os.path.join(data_dir, 'pairs_val.npy'), mmap_mode='r'),
      source_len=source_len, target_len=target_len, pad_id=tokenizer.pad_id,
      stats={split: meta[split] for split in ('train', 'val')})


def validation_pairs(config: ml_collections.ConfigDict, workdir: str) -> list[Pair]:
  """The validation pairs as text, in the order of PairData.val's rows (for scoring generated
  targets against the references)."""
  data_dir = os.path.join(workdir, 'data')
  source_id = _source_id(config, config.train.source_len, config.train.seq_len)
  if _read_meta(data_dir, source_id) is None:
    raise UserError(f'no pair cache in {data_dir}; load_tokenizer_and_pairs makes it')
  with open(os.path.join(data_dir, 'pairs_val.jsonl'), encoding='utf-8') as f:
    return [tuple(json.loads(line)) for line in f]


def _describe(data: ml_collections.ConfigDict) -> str:
  if data.source == 'tfds':
    return f'tfds:{data.tfds_name}:{data.source_key}->{data.target_key}'
  if data.source == 'pairs_jsonl':
    return f'pairs_jsonl:{data.pairs_files}'
  return data.source


def _source_id(config: ml_collections.ConfigDict, source_len: int, target_len: int) -> str:
  """Fingerprint of every setting that changes the pair caches (max_train_tokens does not)."""
  relevant = {k: v for k, v in config.data.to_dict().items() if k != 'max_train_tokens'}
  relevant.update(tokenizer=config.tokenizer.to_dict(), source_len=source_len,
                  target_len=target_len)
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _read_meta(data_dir: str, source_id: str) -> dict | None:
  """The caches' metadata, or None when there are none yet; settings that differ from the ones
  that made them are an error."""
  path = os.path.join(data_dir, 'pairs_meta.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  if meta['source_id'] != source_id:
    raise UserError(f'{data_dir} holds pairs made with other data, tokenizer or length settings '
                    f'({meta["source"]}, source_len {meta["source_len"]}, target_len '
                    f'{meta["target_len"]}); use a new workdir')
  return meta


def _write_caches(tokenizer: tokenizer_lib.Tokenizer, train: list[Pair], val: list[Pair],
                  data_dir: str, source_id: str, source: str, source_len: int,
                  target_len: int) -> dict:
  os.makedirs(data_dir, exist_ok=True)
  meta = {'source': source, 'source_id': source_id, 'source_len': source_len,
          'target_len': target_len}
  for split, pairs in (('train', train), ('val', val)):
    tmp = os.path.join(data_dir, f'pairs_{split}.npy.tmp')
    # Filled in blocks straight into the file: millions of pairs never sit in memory as lists.
    rows = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.int32,
                                     shape=(len(pairs), source_len + target_len + 1))
    lengths = np.zeros((len(pairs), 2), np.int64)
    for start in range(0, len(pairs), 1024):
      block = slice(start, start + 1024)
      rows[block], lengths[block] = encode_pairs(tokenizer, pairs[block], source_len, target_len)
    rows.flush()
    del rows
    os.replace(tmp, os.path.join(data_dir, f'pairs_{split}.npy'))
    meta[split] = _length_stats(lengths, source_len, target_len)
  _write_atomic(os.path.join(data_dir, 'pairs_val.jsonl'),
                ''.join(json.dumps(pair) + '\n' for pair in val))
  # Last, so that its presence means every cache is complete.
  _write_atomic(os.path.join(data_dir, 'pairs_meta.json'), json.dumps(meta, indent=1))
  return meta


def _length_stats(lengths: np.ndarray, source_len: int, target_len: int) -> dict:
  """Pair count, token-length percentiles and the share of sources / targets cut (no EOS)."""
  stats = {'pairs': len(lengths)}
  for column, side, limit in ((0, 'source', source_len), (1, 'target', target_len)):
    stats[f'{side}_tokens_p50_p90_p99'] = [round(float(np.percentile(lengths[:, column], q)), 1)
                                           for q in (50, 90, 99)]
    stats[f'{side}_cut'] = float(np.mean(lengths[:, column] >= limit))
  return stats


def _write_atomic(path: str, text: str) -> None:
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)
