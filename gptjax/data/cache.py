"""The caches a workdir keeps of its data, WORKDIR/data/: the training and validation rows, encoded
once with the workdir's tokenizer and reused by every later command on the workdir.

Two layouts share this module: token windows of documents (gptjax/data/windows.py) and rows of
(source, target) pairs (gptjax/data/pairs.py). A Layout says only what differs, its files and how
they are written; the rest is here, once:

  - the fingerprint of the settings that change a cache: data.* except data.max_train_tokens and
    data.train_subset (which only slice the training tokens), tokenizer.*, and the lengths the
    layout's rows depend on. It is computed as it always was, so a workdir written by older code
    keeps loading;
  - the meta file, written last, so its presence means the cache is complete. It records the
    fingerprint; a workdir whose cache was built from other settings is refused with one UserError
    naming the source it was built from;
  - load or build: the writer process (process 0) splits the source, trains the tokenizer on the
    training texts on first use and writes the cache; the others only find it;
  - a checksum of each of the layout's files, recorded in the meta file when the cache is built
    and checked whenever it is opened: a file zeroed, overwritten or cut short since is one
    UserError naming it (whole files up to 256 MiB; of larger ones, 1024 blocks spread evenly
    through them, so that opening stays cheap);
  - atomic writes (write_atomic, atomic_path, from gptjax/data/atomic.py): a file appears whole or
    not at all, so a crash never leaves half a cache, tokenizer or record behind;
  - for the sweep runner, which builds one cache and shares it between runs: whether two configs
    share a cache (same_cache), and which files a cache is (cache_files, copy_cache).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence

import ml_collections

from gptjax.data import sources, tokenizers
from gptjax.data.atomic import atomic_path, write_atomic
from gptjax.errors import UserError

# With gptjax/data/atomic.py's writes, which the rest of gptjax calls as cache.write_atomic.
__all__ = [
  'Layout',
  'atomic_path',
  'cache_files',
  'checksum',
  'copy_cache',
  'fingerprint',
  'load_or_build',
  'read_meta',
  'same_cache',
  'verify_checksums',
  'write_atomic',
]

# The data settings that do not change a cache: the runs of a data-size sweep share one.
NOT_FINGERPRINTED = ('max_train_tokens', 'train_subset')


@dataclasses.dataclass(frozen=True)
class Layout:
  """What one kind of cache is: its files under WORKDIR/data and how they are made."""

  what: str  # how messages name it: 'token cache'
  meta_file: str  # written last
  files: tuple[str, ...]  # the other files
  # data config -> (training items, validation items) of the configured source.
  split: Callable[[ml_collections.ConfigDict], tuple[Sequence, Sequence]]
  # training items -> the texts the tokenizer is trained on.
  texts: Callable[[Sequence], Iterable[str]]
  # (tokenizer, training items, validation items, data directory, **lengths) -> the meta entries;
  # writes `files` (each with write_atomic or atomic_path).
  write: Callable[..., dict]
  # data config -> the source as messages name it: 'stdlib', 'text_files:~/data/*.txt'.
  describe: Callable[[ml_collections.ConfigDict], str]
  # run config -> the lengths the rows depend on, by name ({} when none); the meta records them.
  lengths: Callable[[ml_collections.ConfigDict], dict[str, int]] = lambda config: {}
  # the entries the meta file must hold besides source and source_id (read_meta checks them).
  keys: tuple[str, ...] = ()


def fingerprint(layout: Layout, config: ml_collections.ConfigDict) -> str:
  """A hash of every setting that changes `layout`'s cache for the run config `config`."""
  relevant = {k: v for k, v in config.data.to_dict().items() if k not in NOT_FINGERPRINTED}
  relevant['tokenizer'] = config.tokenizer.to_dict()
  relevant.update(layout.lengths(config))
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def same_cache(layout: Layout, a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> bool:
  """Whether the run configs a and b make the same cache of this layout (and so can share it)."""
  return fingerprint(layout, a) == fingerprint(layout, b)


def read_meta(layout: Layout, config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """The meta of the workdir's complete cache, or None when there is none yet. A cache built from
  other settings than `config`'s is a UserError, and so is a meta file that is not a JSON object
  with the layout's entries."""
  data_dir = os.path.join(workdir, 'data')
  path = os.path.join(data_dir, layout.meta_file)
  if not os.path.exists(path):
    return None
  meta, problem = sources.json_object(path)
  if meta is not None:
    missing = [k for k in ('source', 'source_id', *layout.keys) if k not in meta]
    problem = f'it lacks {", ".join(missing)}' if missing else None
  if problem is not None:
    raise UserError(
      f'{path} is not a readable {layout.what} record ({problem}); delete it and the next '
      f'gptjax.main run rebuilds the cache in {data_dir} from the data source, or put the '
      'original back'
    )
  if meta['source_id'] != fingerprint(layout, config):
    lengths = layout.lengths(config)
    built = ''.join([meta['source']] + [f', {name} {meta.get(name)}' for name in lengths])
    raise UserError(
      f'{data_dir} holds a {layout.what} built from different data or tokenizer '
      f'settings{" or lengths" if lengths else ""} ({built}); use a new workdir'
    )
  return meta


def load_or_build(
  layout: Layout, config: ml_collections.ConfigDict, workdir: str, is_writer: bool = True
) -> tuple[tokenizers.Tokenizer, dict]:
  """(the workdir's tokenizer, the meta of its cache), both made on first use.

  Only the process with is_writer (process 0) trains and writes; in a multi-host run the others
  call this after a barrier and find the files there.
  """
  meta = read_meta(layout, config, workdir)
  data_dir = os.path.join(workdir, 'data')
  if meta is None and not is_writer:
    raise UserError(f'no {layout.what} in {data_dir} (process 0 should have written it)')
  train = val = None
  if meta is None:
    train, val = layout.split(config.data)
  tokenizer = tokenizers.load_or_train(
    config.tokenizer.kind,
    config.tokenizer.vocab_size,
    workdir,
    None if train is None else layout.texts(train),
  )
  if meta is None:
    os.makedirs(data_dir, exist_ok=True)
    lengths = layout.lengths(config)
    meta = {
      'source': layout.describe(config.data),
      'source_id': fingerprint(layout, config),
      **lengths,
    }
    meta.update(layout.write(tokenizer, train, val, data_dir, **lengths))
    meta['checksums'] = {name: checksum(os.path.join(data_dir, name)) for name in layout.files}
    write_atomic(os.path.join(data_dir, layout.meta_file), json.dumps(meta, indent=1))
  else:
    verify_checksums(layout, meta, data_dir)
  return tokenizer, meta


_WHOLE_FILE_BYTES = 256 << 20  # checksummed whole up to this size; sampled above it
_BLOCKS, _BLOCK_BYTES = 1024, 64 << 10


def checksum(path: str) -> str:
  """'SIZE:CRC32' of a cache file: of all of it up to 256 MiB, else of 1024 blocks of 64 KiB at
  evenly spaced offsets (any zeroed, overwritten or truncated stretch of a few MiB is seen)."""
  size = os.path.getsize(path)
  crc = 0
  with open(path, 'rb') as f:
    if size <= _WHOLE_FILE_BYTES:
      while block := f.read(16 << 20):
        crc = zlib.crc32(block, crc)
    else:
      for i in range(_BLOCKS):
        f.seek((size - _BLOCK_BYTES) * i // (_BLOCKS - 1))
        crc = zlib.crc32(f.read(_BLOCK_BYTES), crc)
  return f'{size}:{crc:08x}'


def verify_checksums(layout: Layout, meta: dict, data_dir: str) -> None:
  """Raises a UserError naming the first of the layout's files whose checksum is not the one the
  meta file recorded when the cache was built (a cache built before checksums were recorded has
  none, and is not checked)."""
  recorded = meta.get('checksums')
  if not isinstance(recorded, dict):
    return
  meta_path = os.path.join(data_dir, layout.meta_file)
  for name in layout.files:
    path = os.path.join(data_dir, name)
    if name not in recorded:
      continue
    if not os.path.isfile(path):
      problem = 'it is missing'
    else:
      found = checksum(path)
      if found == recorded[name]:
        continue
      size, recorded_size = found.split(':')[0], str(recorded[name]).split(':')[0]
      problem = (
        f'it has {size} bytes where {layout.meta_file} records {recorded_size}'
        if size != recorded_size
        else f'its checksum is not the one {layout.meta_file} recorded when the cache was built: '
        'it was overwritten or zeroed since'
      )
    raise UserError(
      f'{path} is damaged ({problem}); delete {meta_path} and the next gptjax.main run rebuilds '
      f'the {layout.what} in {data_dir} from the data source, or put the original back'
    )


def cache_files(layout: Layout, workdir: str) -> list[str]:
  """The files of the workdir's complete cache, relative to it, the meta file last: the tokenizer
  it was encoded with and the layout's files. [] when the cache is not complete."""
  if not os.path.exists(os.path.join(workdir, 'data', layout.meta_file)):
    return []
  tokenizer_files = [
    name
    for name in sorted(set(tokenizers.TOKENIZER_FILES.values()))
    if os.path.isfile(os.path.join(workdir, name))
  ]
  return tokenizer_files + [
    os.path.join('data', name) for name in (*layout.files, layout.meta_file)
  ]


def copy_cache(layout: Layout, source: str, target: str) -> None:
  """Puts the complete cache of workdir `source` into workdir `target`, unless that has one: the
  layout's files as hard links where the file system allows (read-only memory maps, so one copy
  on disk serves every workdir), the tokenizer and meta as copies, the meta file last."""
  files = cache_files(layout, source)
  if not files:
    raise UserError(f'no {layout.what} in {os.path.join(source, "data")} to copy')
  if cache_files(layout, target):
    return
  os.makedirs(os.path.join(target, 'data'), exist_ok=True)
  linked = {os.path.join('data', name) for name in layout.files}
  for relative in files:
    source_path, target_path = os.path.join(source, relative), os.path.join(target, relative)
    if os.path.exists(target_path):
      os.remove(target_path)
    if relative in linked:
      try:
        os.link(source_path, target_path)
        continue
      except OSError:  # another file system
        pass
    with atomic_path(target_path) as tmp:
      shutil.copyfile(source_path, tmp)
