"""Where text comes from: documents of the standard library, text files, TFDS and JSONL, and
their train/validation split.

One hash split (split_by_hash) holds out documents, stdlib modules (gptjax/data/docstrings.py) and
JSONL pairs (gptjax/data/pairs.py) alike, and one TFDS reader (tfds_source) serves the token
caches, the pair caches and the TFDS tasks (gptjax/downstream/tasks.py).
"""

import glob
import json
import os
import sys
import sysconfig
import zlib
from collections.abc import Iterable, Iterator, Sequence

import ml_collections

from gptjax.errors import UserError

Document = tuple[str, str]  # (name, text)


def stdlib_documents() -> Iterator[Document]:
  """The running interpreter's standard library source (~30 MB), in sorted path order."""
  root = sysconfig.get_paths()['stdlib']
  paths = sorted(
    p
    for p in glob.glob(os.path.join(root, '**', '*.py'), recursive=True)
    if 'site-packages' not in p.split(os.sep)
  )
  for path in paths:
    with open(path, 'rb') as f:  # a few test files are deliberately not UTF-8
      yield os.path.relpath(path, root), f.read().decode('utf-8', errors='replace')


def text_file_documents(pattern: str) -> Iterator[Document]:
  """Every file matching a glob (or under a directory), sorted by path; each file is a document."""
  pattern = os.path.expanduser(pattern)
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, '**', '*')
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
  if not paths:
    raise UserError(f'data.text_files={pattern!r} matches no files')
  for path in paths:
    with open(path, 'rb') as f:
      yield path, decode_or_warn(f.read(), path)


def decode_or_warn(data: bytes, path: str) -> str:
  """A text file's bytes as UTF-8. Bytes that are not UTF-8 become U+FFFD, the replacement
  character, as they always have (so token caches do not change), with one `warning:` line per
  file naming it and counting them: a corpus file in another encoding, or not text at all, is
  then seen before it is trained on."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    escaped = data.decode('utf-8', errors='surrogateescape')  # each bad byte: one lone surrogate
    bad = sum(1 for c in escaped if '\udc80' <= c <= '\udcff')
    line = data.count(b'\n', 0, e.start) + 1
    print(
      f'warning: {path} is not all UTF-8: {bad} of its {len(data)} bytes (the first on line '
      f'{line}) are read as U+FFFD, the replacement character; convert it to UTF-8 (iconv) or '
      'leave it out of the source',
      file=sys.stderr,
    )
    return data.decode('utf-8', errors='replace')


def utf8_lines(path: str) -> list[str]:
  """The lines of a UTF-8 text file (a JSONL or CSV input), split at newlines only; a UserError
  naming the line and column of the first bytes that are not UTF-8."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    column = e.start - data.rfind(b'\n', 0, e.start)
    raise UserError(
      f'{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at column {column}); save the '
      'file as UTF-8'
    ) from None
  return text.split('\n')


def tfds_source(name: str, split: str, data_dir: str | None):
  """The records of a TFDS dataset's split, prepared in ArrayRecord format (tfds.data_source, no
  TF): a sequence of feature dicts."""
  import tensorflow_datasets as tfds  # slow to import; only TFDS sources need it

  prepare = (
    f'prepare it in the array_record format, on a machine with network access if need be '
    f"(tfds.builder({name!r}, file_format='array_record').download_and_prepare()), and "
    'copy it over (see README)'
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:  # no code for it, and no prepared copy
    raise UserError(
      f'TFDS dataset {name} is not prepared in {data_dir or "the default data_dir"}, '
      'and this TFDS has no builder of that name (an unknown TFDS dataset, or one '
      f'whose code does not load here); {prepare}'
    ) from None
  if not builder.is_prepared():
    raise UserError(f'TFDS dataset {name} is not prepared in {builder.data_dir}; {prepare}')
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except (ValueError, KeyError, NotImplementedError) as e:
    raise UserError(f'cannot read TFDS {name}[{split}]: {str(e).splitlines()[0]}') from None
  return source


def tfds_records(
  name: str, split: str, data_dir: str | None, features: Sequence[str]
) -> Iterator[dict]:
  """The records of a TFDS split in order, each checked to have `features`. Read in blocks: much
  faster than one by one on millions of records."""
  source = tfds_source(name, split, data_dir)
  for start in range(0, len(source), 1024):
    for record in source.__getitems__(range(start, min(start + 1024, len(source)))):
      for feature in features:
        if feature not in record:
          raise UserError(f'TFDS {name} has no feature {feature!r}; it has {sorted(record)}')
      yield record


def as_text(value: bytes | str) -> str:
  """A TFDS text feature (bytes) as a str."""
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


def tfds_documents(
  name: str, split: str, text_key: str, data_dir: str | None
) -> Iterator[Document]:
  """Records of a TFDS dataset prepared in ArrayRecord format, as documents."""
  for i, record in enumerate(tfds_records(name, split, data_dir, [text_key])):
    yield f'{name}/{split}/{i}', as_text(record[text_key])


def json_object(path: str) -> tuple[dict | None, str | None]:
  """(the JSON object in the file at `path`, None), or (None, why it is not one): not UTF-8, not
  JSON, or JSON of another type. Each caller names the file and says what to do."""
  try:
    with open(path, 'rb') as f:
      value = json.loads(f.read().decode('utf-8'))
  except (ValueError, UnicodeDecodeError) as e:  # not JSON, or not text at all
    return None, ' '.join(str(e).split())[:200]
  if not isinstance(value, dict):
    return None, f'a JSON {type(value).__name__}, not an object'
  return value, None


def jsonl_objects(lines: Iterable[str], path: str) -> Iterator[tuple[str, dict]]:
  """(where, object) for each non-blank line of a JSONL file, where = 'path:line'; a line that is
  not a JSON object is a UserError naming it."""
  for line_number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    where = f'{path}:{line_number}'
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f'{where}: not valid JSON ({e.msg} at column {e.colno})') from None
    if not isinstance(record, dict):
      raise UserError(f'{where}: expected a JSON object, got {type(record).__name__}')
    yield where, record


def split_documents(config: ml_collections.ConfigDict) -> tuple[list[Document], list[Document]]:
  """(train, validation) documents of the configured source.

  TFDS uses its own splits. Other sources hold out the val_fraction of documents (at least one)
  with the smallest hash of their name (split_by_hash); with fewer than 20 documents (a single
  big file, say) the last val_fraction of each document, cut at a line boundary, is held out
  instead.
  """
  if config.source == 'tfds':
    train = list(
      tfds_documents(
        config.tfds_name, config.tfds_train_split, config.tfds_text_key, config.tfds_data_dir
      )
    )
    val = list(
      tfds_documents(
        config.tfds_name, config.tfds_eval_split, config.tfds_text_key, config.tfds_data_dir
      )
    )
    return _cap(train, config.max_documents), val
  if config.source == 'stdlib':
    docs = list(stdlib_documents())
  elif config.source == 'text_files':
    docs = list(text_file_documents(config.text_files))
  else:
    raise UserError(f"unknown data.source {config.source!r}; use 'stdlib', 'text_files' or 'tfds'")
  docs = [d for d in _cap(docs, config.max_documents) if d[1]]
  if not docs:
    raise UserError(f'the {config.source} corpus is empty')
  if len(docs) >= 20:
    return split_by_hash(docs, [name for name, _ in docs], config.val_fraction)
  train, val = [], []
  for name, text in docs:
    cut = text.rfind('\n', 0, int(len(text) * (1 - config.val_fraction))) + 1
    cut = cut or int(len(text) * (1 - config.val_fraction))
    train.append((name, text[:cut]))
    val.append((name, text[cut:]))
  return train, val


def split_by_hash(items: Sequence, keys: Sequence[str], val_fraction: float) -> tuple[list, list]:
  """(train, validation) items: the val_fraction of them (at least one) with the smallest crc32 of
  their key are held out, a choice that barely moves when items are added; equal keys sort next
  to each other. Both sides keep the input order."""
  n_val = max(1, round(val_fraction * len(items)))
  by_hash = sorted(range(len(items)), key=lambda i: (zlib.crc32(keys[i].encode()), i))
  is_val = set(by_hash[:n_val])
  return ([x for i, x in enumerate(items) if i not in is_val], [items[i] for i in sorted(is_val)])


def _cap(docs: list[Document], max_documents: int) -> list[Document]:
  return docs[:max_documents] if max_documents > 0 else docs
