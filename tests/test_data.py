import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from gptjax.data import cache, pairs, sources, windows
from gptjax.errors import UserError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def test_train_batches_are_a_pure_function_of_seed_and_step():
  tokens = np.arange(10_000, dtype=np.uint16)
  a = windows.train_batch(tokens, step=5, seed=0, global_batch=8, seq_len=16)
  np.testing.assert_array_equal(
    a, windows.train_batch(tokens, step=5, seed=0, global_batch=8, seq_len=16)
  )
  assert not np.array_equal(
    a, windows.train_batch(tokens, step=6, seed=0, global_batch=8, seq_len=16)
  )
  assert not np.array_equal(
    a, windows.train_batch(tokens, step=5, seed=1, global_batch=8, seq_len=16)
  )
  assert a.shape == (8, 17) and a.dtype == np.int32
  np.testing.assert_array_equal(np.diff(a, axis=1), 1)  # contiguous windows


def test_each_process_gets_its_own_rows_of_the_global_batch():
  tokens = np.arange(10_000, dtype=np.uint16)
  whole = windows.train_batch(tokens, 3, 0, global_batch=8, seq_len=16)
  parts = [
    windows.train_batch(tokens, 3, 0, 8, 16, process_index=p, process_count=4) for p in range(4)
  ]
  assert all(p.shape == (2, 17) for p in parts)
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  evals = [list(windows.eval_batches(tokens, 2, 8, 16, p, 2)) for p in range(2)]
  for b, full in enumerate(windows.eval_batches(tokens, 2, 8, 16)):
    np.testing.assert_array_equal(np.concatenate([evals[0][b], evals[1][b]]), full)


def test_eval_windows_are_fixed_and_tile_the_validation_split():
  tokens = np.arange(100, dtype=np.uint16)
  batches = list(windows.eval_batches(tokens, n_batches=2, global_batch=4, seq_len=10))
  starts = np.concatenate(batches)[:, 0]
  np.testing.assert_array_equal(starts, [0, 10, 20, 30, 40, 50, 60, 70])
  small = np.concatenate(list(windows.eval_batches(np.arange(25), 1, 4, 10)))[:, 0]
  np.testing.assert_array_equal(small, [0, 10, 0, 10])  # wraps around a short split


def test_stdlib_corpus_is_sorted_source_without_site_packages():
  docs = sources.stdlib_documents()
  names = [next(docs)[0] for _ in range(50)]
  assert names == sorted(names) and all(n.endswith('.py') for n in names)
  assert not any('site-packages' in n for n in names)


def _data_config(tiny_config, corpus_glob):
  tiny_config.data.source = 'text_files'
  tiny_config.data.text_files = corpus_glob
  return tiny_config


def test_token_cache_holds_bos_document_eos_and_is_reused(tiny_config, corpus_glob, tmp_path):
  config = _data_config(tiny_config, corpus_glob)
  tok, token_data = windows.load_tokenizer_and_data(config, str(tmp_path / 'w'), seq_len=32)
  train_docs, val_docs = sources.split_documents(config.data)
  assert len(val_docs) >= 1 and len(train_docs) > len(val_docs)
  first = [tok.bos_id, *tok.encode(train_docs[0][1]), tok.eos_id]
  np.testing.assert_array_equal(token_data.train[: len(first)], first)
  assert len(token_data.train) == sum(len(tok.encode(t)) + 2 for _, t in train_docs)
  assert token_data.val_bytes_per_token == pytest.approx(
    sum(len(t.encode()) for _, t in val_docs) / len(token_data.val)
  )
  assert 0 < token_data.unigram_entropy < np.log(tok.vocab_size)
  cache = tmp_path / 'w' / 'data' / 'train.bin'
  written = os.path.getmtime(cache)
  windows.load_tokenizer_and_data(config, str(tmp_path / 'w'), seq_len=32)
  assert os.path.getmtime(cache) == written
  config.data.val_fraction = 0.5
  with pytest.raises(UserError, match='different data or tokenizer'):
    windows.load_tokenizer_and_data(config, str(tmp_path / 'w'), seq_len=32)


def test_max_train_tokens_keeps_only_the_first_d_tokens(tiny_config, corpus_glob, tmp_path):
  config = _data_config(tiny_config, corpus_glob)
  _, full = windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  config.data.max_train_tokens = 1000
  _, limited = windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  np.testing.assert_array_equal(limited.train, full.train[:1000])


def test_a_single_file_is_split_inside_the_document(tiny_config, tmp_path):
  path = tmp_path / 'one.txt'
  path.write_text(''.join(f'line {i}\n' for i in range(1000)))
  tiny_config.data.source, tiny_config.data.text_files = 'text_files', str(path)
  tiny_config.data.val_fraction = 0.1
  ((name, train_text),) = sources.split_documents(tiny_config.data)[0]
  ((_, val_text),) = sources.split_documents(tiny_config.data)[1]
  assert train_text + val_text == path.read_text() and val_text.startswith('line 9')
  assert len(val_text) == pytest.approx(0.1 * len(path.read_text()), rel=0.05)


@pytest.mark.parametrize(
  'setup, message',
  [
    ('no_match', 'matches no files'),
    ('empty', 'corpus is empty'),
    ('too_small', 'fewer than one sequence'),
    ('unknown_tfds', 'unknown TFDS dataset'),
    ('unprepared_tfds', 'is not prepared'),
  ],
)
def test_bad_data_is_a_user_error(tiny_config, tmp_path, setup, message):
  config = tiny_config
  config.data.source = 'text_files'
  if setup == 'no_match':
    config.data.text_files = str(tmp_path / 'nothing*.txt')
  elif setup == 'empty':
    (tmp_path / 'a.txt').write_text('')
    config.data.text_files = str(tmp_path / 'a.txt')
  elif setup == 'too_small':
    (tmp_path / 'a.txt').write_text('tiny\n' * 3)
    config.data.text_files = str(tmp_path / 'a.txt')
  elif setup == 'unknown_tfds':
    config.data.source, config.data.tfds_name = 'tfds', 'no_such_dataset_xyz'
  else:
    config.data.source, config.data.tfds_name = 'tfds', 'tiny_shakespeare'
    config.data.tfds_data_dir = str(tmp_path / 'empty_tfds_dir')
  with pytest.raises(UserError, match=message):
    windows.load_tokenizer_and_data(config, str(tmp_path / 'w'), seq_len=32)


def test_tfds_source_reads_a_locally_built_array_record_dataset(tiny_config, tmp_path):
  import tensorflow_datasets as tfds

  class GptjaxTinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({'content': tfds.features.Text()})
      )

    def _split_generators(self, dl_manager):
      return {
        'train': self._generate_examples(40, 'train'),
        'validation': self._generate_examples(5, 'val'),
      }

    def _generate_examples(self, n, split):
      for i in range(n):
        yield i, {'content': f'{split} record {i}: ' + 'the quick brown fox\n' * 5}

  GptjaxTinyText(data_dir=str(tmp_path / 'tfds'), file_format='array_record').download_and_prepare()
  config = tiny_config
  config.data.source, config.data.tfds_name = 'tfds', 'gptjax_tiny_text'
  config.data.tfds_data_dir, config.data.tfds_text_key = str(tmp_path / 'tfds'), 'content'
  tok, token_data = windows.load_tokenizer_and_data(config, str(tmp_path / 'w'), seq_len=32)
  records = len('train record 0: ') + len('the quick brown fox\n') * 5
  assert len(token_data.train) == sum(records + (i >= 10) + 2 for i in range(40))
  val_text = tok.decode(token_data.val)  # TFDS shuffles records when it prepares a split
  assert all(f'val record {i}: the quick' in val_text for i in range(5))
  config.data.tfds_text_key = 'text'
  with pytest.raises(UserError, match="no feature 'text'"):
    windows.load_tokenizer_and_data(config, str(tmp_path / 'w2'), seq_len=32)


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


def test_one_hash_split_holds_out_the_smallest_hashes_in_input_order():
  names = [f'module_{i}.py' for i in range(100)]
  train, val = sources.split_by_hash(names, names, 0.05)
  assert len(val) == 5 and sorted(train + val) == sorted(names)
  assert val == sorted(val, key=names.index) and train == sorted(train, key=names.index)
  more = names + ['new.py']
  assert set(sources.split_by_hash(more, more, 0.05)[1]) - {'new.py'} <= set(val)  # barely moves
  pair_list = [(name, 'target') for name in names]
  assert pairs.split_by_source_hash(pair_list, 0.05)[1] == [(name, 'target') for name in val]
