"""The LM's token caches and windows: (seed, step) batches, per-process rows, eval windows."""

import os

import numpy as np
import pytest

from gptjax.data import sources, windows
from gptjax.errors import UserError


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


def test_eval_windows_are_fixed_and_spread_over_the_validation_split():
  tokens = np.arange(1001, dtype=np.uint16)  # 100 windows of 10 tokens
  batches = list(windows.eval_batches(tokens, n_batches=2, global_batch=4, seq_len=10))
  starts = [list(batch[:, 0]) for batch in batches]
  # 8 windows evenly over the split, each batch a run of neighbouring ones
  assert starts == [[0, 120, 250, 370], [500, 620, 750, 870]]
  again = [list(b[:, 0]) for b in windows.eval_batches(tokens, 2, 4, 10)]
  assert again == starts
  whole = np.concatenate(list(windows.eval_batches(tokens, 0, 8, 10)))[:, 0]
  # 12 whole batches of 8: 96 of the 100 windows, skipping 4 spread over the split
  np.testing.assert_array_equal(whole, np.arange(96) * 100 // 96 * 10)
  assert len(set(whole)) == 96 and whole[-1] == 980
  small = np.concatenate(list(windows.eval_batches(np.arange(25), 1, 4, 10)))[:, 0]
  np.testing.assert_array_equal(small, [0, 10, 0, 10])  # wraps around a short split
  tiny = np.concatenate(list(windows.eval_batches(np.arange(25), 0, 4, 10)))[:, 0]
  np.testing.assert_array_equal(tiny, [0, 10, 0, 10])  # smaller than one batch: one, wrapped


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


def test_a_spread_subset_takes_evenly_spaced_pieces_of_the_whole_split(
  tiny_config, corpus_glob, tmp_path
):
  config = _data_config(tiny_config, corpus_glob)
  _, full = windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  config.data.update(max_train_tokens=3 * windows.SUBSET_CHUNK + 100, train_subset='spread')
  _, spread = windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  assert len(spread.train) == 3 * windows.SUBSET_CHUNK + 100
  chunk, n = windows.SUBSET_CHUNK, len(full.train)
  starts = [0, (n - chunk) // 3, 2 * (n - chunk) // 3, n - chunk]  # 4 pieces, the last cut short
  expected = np.concatenate([full.train[s : s + chunk] for s in starts])[: len(spread.train)]
  np.testing.assert_array_equal(spread.train, expected)
  config.data.max_train_tokens = n + 1  # more than there is: the whole split
  _, whole = windows.load_tokenizer_and_data(config, str(tmp_path), seq_len=32)
  np.testing.assert_array_equal(whole.train, full.train)
