"""The encoder-decoder's pair rows: layout, batches, caches, JSONL and TFDS sources."""

import json
import os
import pathlib

import numpy as np
import pytest

from gptjax.configs import default
from gptjax.data import cache as cache_lib
from gptjax.data import docstrings, pairs, sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError


def test_rows_hold_the_source_then_bos_target_eos():
  tok = tokenizer_lib.ByteTokenizer()
  rows, lengths = pairs.encode_pairs(
    tok, [('ab', 'xy'), ('abcd', 'xyz'), ('abcdef', 'vwxyz')], source_len=4, target_len=4
  )
  assert rows.dtype == np.int32 and rows.shape == (3, 9)
  np.testing.assert_array_equal(lengths, [[2, 2], [4, 3], [6, 5]])
  source, target = pairs.split_row(rows, source_len=4)
  a, b, c, d, v, w, x, y, z = (tok.encode(ch)[0] for ch in 'abcdvwxyz')
  pad, bos, eos = tok.pad_id, tok.bos_id, tok.eos_id
  np.testing.assert_array_equal(
    source,
    [
      [a, b, eos, pad],  # EOS when it fits
      [a, b, c, d],  # exactly full: no room for EOS
      [a, b, c, d],
    ],
  )  # cut
  np.testing.assert_array_equal(
    target,
    [
      [bos, x, y, eos, pad],
      [bos, x, y, z, eos],  # BOS + 3 + EOS = target_len + 1
      [bos, v, w, x, y],
    ],
  )  # cut: no EOS rather than overflow


def _pair_data(n_train=50, n_val=7):
  """Rows [3r, 3r + 1, 3r + 2] (plus 1000 for validation), so a row's first column names it."""
  return pairs.PairData(
    train=np.arange(3 * n_train, dtype=np.int32).reshape(n_train, 3),
    val=np.arange(1000, 1000 + 3 * n_val, dtype=np.int32).reshape(n_val, 3),
    source_len=1,
    target_len=1,
    pad_id=0,
  )


def test_train_batches_are_a_pure_function_of_seed_and_step_shared_between_processes():
  pair_data = _pair_data()
  whole = pair_data.train_batch(step=5, seed=0, global_batch=8)
  assert whole.shape == (8, 3) and whole.dtype == np.int32
  np.testing.assert_array_equal(whole, pair_data.train_batch(5, 0, 8))
  assert not np.array_equal(whole, pair_data.train_batch(6, 0, 8))
  assert not np.array_equal(whole, pair_data.train_batch(5, 1, 8))
  parts = [pair_data.train_batch(5, 0, 8, process_index=p, process_count=4) for p in range(4)]
  assert all(p.shape == (2, 3) for p in parts)
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_eval_batches_wrap_around_a_short_validation_split():
  pair_data = _pair_data(n_val=7)
  batches = list(pair_data.eval_batches(n_batches=2, global_batch=4))
  rows = (np.concatenate(batches)[:, 0] - 1000) // 3
  np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 5, 6, 0])
  again = list(pair_data.eval_batches(n_batches=2, global_batch=4))
  np.testing.assert_array_equal(np.concatenate(again), np.concatenate(batches))
  halves = [list(pair_data.eval_batches(2, 4, p, 2)) for p in range(2)]
  for b, full in enumerate(batches):
    np.testing.assert_array_equal(np.concatenate([halves[0][b], halves[1][b]]), full)


def test_pair_data_counts_the_target_tokens_that_carry_loss():
  tok = tokenizer_lib.ByteTokenizer()
  rows, _ = pairs.encode_pairs(
    tok, [('ab', 'xy'), ('abcd', 'xyz'), ('abcdef', 'vwxyz')], source_len=4, target_len=4
  )
  pair_data = pairs.PairData(train=rows, val=rows, source_len=4, target_len=4, pad_id=tok.pad_id)
  assert pair_data.train_tokens == 3 + 4 + 4  # x y EOS | x y z EOS | v w x y (cut)


def _config(tmp_path, source='pairs_jsonl', kind='byte'):
  config = default.get_config()
  config.tokenizer.kind, config.tokenizer.vocab_size = kind, 300
  config.data.source = source
  config.data.pairs_files = str(tmp_path / 'pairs' / '*.jsonl')
  config.data.source_key, config.data.target_key = 'source', 'target'
  config.data.val_fraction = 0.2
  config.encoder_decoder.source_len, config.train.seq_len = 12, 8
  return config


def _write_jsonl(tmp_path, n=40, name='a.jsonl', lines=None):
  os.makedirs(tmp_path / 'pairs', exist_ok=True)
  lines = lines or [
    json.dumps({'source': f'source {i} ' * (i % 3 + 1), 'target': f't{i}', 'extra': i})
    for i in range(n)
  ]
  (tmp_path / 'pairs' / name).write_text('\n'.join(lines) + '\n')


def test_jsonl_pairs_are_cached_once_and_reused(tmp_path):
  _write_jsonl(tmp_path)
  config, workdir = _config(tmp_path), str(tmp_path / 'w')
  tok, pair_data = pairs.load_tokenizer_and_pairs(config, workdir)
  assert pair_data.train.shape == (32, 12 + 8 + 1) and pair_data.val.shape == (8, 21)
  assert pair_data.stats['train']['pairs'] == 32 and pair_data.stats['val']['pairs'] == 8
  assert pair_data.stats['train']['source_cut'] > 0  # 'source 2 ' * 3 is longer than 12 bytes
  val = pairs.validation_pairs(config, workdir)
  assert (
    len(val) == 8
    and val == pairs.split_by_source_hash(pairs.jsonl_pairs(config.data.pairs_files), 0.2)[1]
  )
  np.testing.assert_array_equal(pair_data.val, pairs.encode_pairs(tok, val, 12, 8)[0])
  cache = tmp_path / 'w' / 'data' / 'pairs_train.npy'
  written = os.path.getmtime(cache)
  _, again = pairs.load_tokenizer_and_pairs(config, workdir, is_writer=False)
  assert os.path.getmtime(cache) == written
  np.testing.assert_array_equal(again.train, pair_data.train)
  config.data.max_documents = 10  # caps training pairs; a different cache
  _, capped = pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w2'))
  np.testing.assert_array_equal(capped.train, pair_data.train[:10])
  config.data.max_documents = 0
  config.encoder_decoder.source_len = 16
  with pytest.raises(UserError, match='use a new workdir'):
    pairs.load_tokenizer_and_pairs(config, workdir)
  with pytest.raises(UserError, match='use a new workdir'):
    pairs.validation_pairs(config, workdir)
  with pytest.raises(UserError, match='process 0 should have written it'):
    pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w3'), is_writer=False)
  with open(tmp_path / 'w' / 'data' / 'pairs_meta.json') as f:
    meta = json.load(f)
  assert meta['source_id'] == cache_lib.fingerprint(pairs.LAYOUT, _config(tmp_path))
  assert list(meta) == [
    'source',
    'source_id',
    'source_len',
    'target_len',
    'train',
    'val',
    'checksums',
  ]
  # The fingerprint the code before gptjax/data/cache.py (a158794) gave these settings, with the
  # pairs in /fixed: old pair caches keep loading.
  assert cache_lib.fingerprint(pairs.LAYOUT, _config(pathlib.Path('/fixed'))) == 'a71dd3f9740f7115'


@pytest.mark.parametrize(
  'line, message',
  [
    ('{"source": "a", "target": "b"', r'b\.jsonl:2: not valid JSON'),
    ('["a", "b"]', r'b\.jsonl:2: expected a JSON object'),
    ('{"source": "a"}', r"b\.jsonl:2: no field 'target'"),
    ('{"source": "a", "target": 3}', r"b\.jsonl:2: field 'target' must be a string"),
  ],
)
def test_bad_jsonl_lines_are_user_errors_naming_file_and_line(tmp_path, line, message):
  _write_jsonl(tmp_path, n=3)
  _write_jsonl(tmp_path, name='b.jsonl', lines=['{"source": "a", "target": "b"}', line])
  with pytest.raises(UserError, match=message):
    pairs.load_tokenizer_and_pairs(_config(tmp_path), str(tmp_path / 'w'))


def test_missing_files_unknown_sources_and_empty_splits_are_user_errors(tmp_path):
  with pytest.raises(UserError, match='matches no files'):
    pairs.load_tokenizer_and_pairs(_config(tmp_path), str(tmp_path / 'w'))
  with pytest.raises(UserError, match='unknown data.source'):
    pairs.load_tokenizer_and_pairs(_config(tmp_path, source='stdlib'), str(tmp_path / 'w'))
  _write_jsonl(tmp_path, n=1)
  with pytest.raises(UserError, match='0 training and 1 validation pairs'):
    pairs.load_tokenizer_and_pairs(_config(tmp_path), str(tmp_path / 'w'))


@pytest.mark.parametrize(
  'name, message',
  [('no_such_dataset_xyz', 'unknown TFDS dataset'), ('tiny_shakespeare', 'is not prepared')],
)
def test_unavailable_tfds_datasets_are_user_errors(tmp_path, name, message):
  config = _config(tmp_path, source='tfds')
  config.data.tfds_name, config.data.tfds_data_dir = name, str(tmp_path / 'empty_tfds_dir')
  with pytest.raises(UserError, match=message):
    pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w'))


def test_tfds_pairs_read_two_features_of_a_locally_built_dataset(tmp_path):
  import tensorflow_datasets as tfds

  class GptjaxTinyPairs(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {'de': tfds.features.Text(), 'en': tfds.features.Text()}
        ),
      )

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(20), 'validation': self._generate_examples(3)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {'de': f'Hallo {i}', 'en': f'Hello {i}'}

  builder = GptjaxTinyPairs(data_dir=str(tmp_path / 'tfds'), file_format='array_record')
  builder.download_and_prepare()
  config = _config(tmp_path, source='tfds')
  config.data.tfds_name, config.data.tfds_data_dir = 'gptjax_tiny_pairs', str(tmp_path / 'tfds')
  config.data.source_key, config.data.target_key = 'de', 'en'
  pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w'))
  val = pairs.validation_pairs(config, str(tmp_path / 'w'))
  assert sorted(val) == [(f'Hallo {i}', f'Hello {i}') for i in range(3)]
  config.data.target_key = 'fr'
  with pytest.raises(UserError, match="no feature 'fr'"):
    pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w2'))


def test_stdlib_docstrings_hold_out_whole_modules(tmp_path, monkeypatch):
  # The whole stdlib takes ~15 s to parse; its first 60 modules show the same.
  modules = [doc for doc, _ in zip(sources.stdlib_documents(), range(60))]
  monkeypatch.setattr(sources, 'stdlib_documents', lambda: iter(modules))
  config = _config(tmp_path, source='stdlib_docstrings', kind='char')
  config.data.val_fraction = 0.1
  config.encoder_decoder.source_len, config.train.seq_len = 64, 16
  tok, pair_data = pairs.load_tokenizer_and_pairs(config, str(tmp_path / 'w'))
  by_module = {name: docstrings.docstring_pairs(text) for name, text in modules}
  val = pairs.validation_pairs(config, str(tmp_path / 'w'))
  val_modules = {name for name, found in by_module.items() if set(found) & set(val)}
  train_pairs = {p for name, found in by_module.items() if name not in val_modules for p in found}
  assert len(val_modules) == round(0.1 * sum(1 for found in by_module.values() if found))
  assert len(train_pairs) == len(pair_data.train) > 10 * len(val)
  np.testing.assert_array_equal(pair_data.val, pairs.encode_pairs(tok, val, 64, 16)[0])
