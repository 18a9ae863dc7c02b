"""A workdir's data caches: the fingerprint, reuse of old workdirs, copying, atomic writes."""

import json
import os
import shutil

import ml_collections
import pytest

from gptjax.data import cache, pairs, windows
from gptjax.errors import UserError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def _data_config(tiny_config, corpus_glob):
  tiny_config.data.source = 'text_files'
  tiny_config.data.text_files = corpus_glob
  return tiny_config


def test_a_workdir_written_by_the_old_code_loads_without_rebuilding(tmp_path):
  workdir = str(tmp_path / 'old')
  shutil.copytree(os.path.join(FIXTURES, 'workdir_a158794'), workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  data_dir = os.path.join(workdir, 'data')
  with open(os.path.join(data_dir, 'meta.json')) as f:
    meta = json.load(f)
  assert cache.fingerprint(windows.LAYOUT, config) == meta['source_id'] == 'bc45327102bf6cda'
  written = {name: os.path.getmtime(os.path.join(data_dir, name)) for name in os.listdir(data_dir)}
  _, token_data = windows.load_tokenizer_and_data(config, workdir, seq_len=32, is_writer=False)
  assert {
    name: os.path.getmtime(os.path.join(data_dir, name)) for name in os.listdir(data_dir)
  } == written
  assert token_data.train_tokens == len(token_data.train) == meta['train_tokens']
  assert token_data.val_bytes_per_token == meta['val_bytes'] / meta['val_tokens']


def test_the_fingerprint_covers_data_tokenizer_and_the_layouts_lengths(tiny_config):
  other = tiny_config.copy_and_resolve_references()
  other.data.max_train_tokens = 1000  # slices the cache, does not change it
  other.train.seq_len = 16  # token windows are cut when batches are drawn
  assert cache.same_cache(windows.LAYOUT, tiny_config, other)
  assert not cache.same_cache(pairs.LAYOUT, tiny_config, other)  # the pair rows' target_len
  for field, value in (('data.val_fraction', 0.1), ('tokenizer.vocab_size', 300)):
    changed = tiny_config.copy_and_resolve_references()
    section, name = field.split('.')
    changed[section][name] = value
    assert not cache.same_cache(windows.LAYOUT, tiny_config, changed), field


def test_copy_cache_links_the_large_files_and_copies_the_meta_last(
  tiny_config, corpus_glob, tmp_path
):
  config = _data_config(tiny_config, corpus_glob)
  source, target = str(tmp_path / 'source'), str(tmp_path / 'target')
  assert cache.cache_files(windows.LAYOUT, source) == []
  windows.load_tokenizer_and_data(config, source, seq_len=32)
  files = cache.cache_files(windows.LAYOUT, source)
  # The byte tokenizer has no file.
  assert files == ['data/train.bin', 'data/val.bin', 'data/meta.json']
  cache.copy_cache(windows.LAYOUT, source, target)
  assert cache.cache_files(windows.LAYOUT, target) == files
  for name in ('train.bin', 'val.bin'):
    assert os.path.samefile(os.path.join(source, 'data', name), os.path.join(target, 'data', name))
  assert not os.path.samefile(
    os.path.join(source, 'data', 'meta.json'), os.path.join(target, 'data', 'meta.json')
  )
  _, copied = windows.load_tokenizer_and_data(config, target, seq_len=32, is_writer=False)
  assert copied.train_tokens > 0
  with pytest.raises(UserError, match='no token cache in'):
    cache.copy_cache(windows.LAYOUT, str(tmp_path / 'nothing'), target)


def test_atomic_writes_leave_the_old_file_when_they_fail(tmp_path):
  path = str(tmp_path / 'file.json')
  cache.write_atomic(path, 'old')
  cache.write_atomic(path + '.bin', b'\x00\x01')
  with pytest.raises(RuntimeError):
    with cache.atomic_path(path) as tmp:
      with open(tmp, 'w') as f:
        f.write('half of the new')
      raise RuntimeError('interrupted')
  assert open(path).read() == 'old'
  assert sorted(os.listdir(tmp_path)) == ['file.json', 'file.json.bin']
  assert open(path + '.bin', 'rb').read() == b'\x00\x01'


@pytest.mark.parametrize('layout_name', ['windows', 'pairs'])
@pytest.mark.parametrize('how', ['zeroed', 'shuffled'])
def test_a_cache_file_overwritten_since_it_was_built_is_damage_named_when_opened(
  tiny_config, corpus_glob, tmp_path, layout_name, how
):
  """Same size, ids all inside the vocabulary: only the checksum the meta records tells."""
  import numpy as np

  if layout_name == 'windows':
    config, layout = _data_config(tiny_config, corpus_glob), windows.LAYOUT
    load = lambda: windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  else:
    pairs_file = tmp_path / 'pairs.jsonl'
    pairs_file.write_text(
      ''.join(json.dumps({'source': f's{i}', 'target': f't{i}'}) + '\n' for i in range(40))
    )
    config = tiny_config
    config.data.source, config.data.pairs_files = 'pairs_jsonl', str(pairs_file)
    config.encoder_decoder.source_len, config.train.seq_len = 8, 8
    layout = pairs.LAYOUT
    load = lambda: pairs.load_tokenizer_and_pairs(config, str(tmp_path))
  load()
  data_dir = tmp_path / 'data'
  with open(data_dir / layout.meta_file) as f:
    assert set(json.load(f)['checksums']) == set(layout.files)
  path = data_dir / max(layout.files, key=lambda n: os.path.getsize(data_dir / n))
  original = path.read_bytes()
  if how == 'zeroed':
    damaged = bytes(len(original))
  else:  # the same bytes in another order
    damaged = np.random.default_rng(0).permutation(np.frombuffer(original, np.uint8)).tobytes()
  path.write_bytes(damaged)
  with pytest.raises(UserError, match=f'{path} is damaged \\(its checksum is not the one'):
    load()
  path.write_bytes(original[: len(original) // 2])
  with pytest.raises(UserError, match=f'{path} is damaged \\(it has {len(original) // 2} bytes'):
    load()
  path.write_bytes(original)
  load()
