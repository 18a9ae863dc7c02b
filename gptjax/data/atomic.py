"""Atomic file writes: a file appears whole or not at all, so a crash never leaves half a cache,
tokenizer, config or record behind. Written beside the target, then renamed over it (os.replace
is atomic on one file system).

gptjax/data/cache.py offers these as cache.write_atomic and cache.atomic_path, which is how the
rest of gptjax calls them; they live here, below both, because the cache module imports the
tokenizers, and the tokenizers save their files with them.
"""

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """A temporary path beside `path` to write a file at (a large array, say, in pieces); the file
  becomes `path` when the block ends, in one atomic rename, and is removed if the block raises."""
  tmp = path + '.tmp'
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes text (as UTF-8) or bytes to `path` so that it holds either the old or the new data,
  never part of it."""
  with atomic_path(path) as tmp:
    if isinstance(data, str):
      with open(tmp, 'w', encoding='utf-8') as f:
        f.write(data)
    else:
      with open(tmp, 'wb') as f:
        f.write(data)
