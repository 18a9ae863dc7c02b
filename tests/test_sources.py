"""Where text comes from: the stdlib corpus, text files, TFDS, and the one hash split."""

import pytest

from gptjax.data import pairs, sources, windows
from gptjax.errors import UserError


def test_stdlib_corpus_is_sorted_source_without_site_packages():
  docs = sources.stdlib_documents()
  names = [next(docs)[0] for _ in range(50)]
  assert names == sorted(names) and all(n.endswith('.py') for n in names)
  assert not any('site-packages' in n for n in names)


def test_a_single_file_is_split_inside_the_document(tiny_config, tmp_path):
  path = tmp_path / 'one.txt'
  path.write_text(''.join(f'line {i}\n' for i in range(1000)))
  tiny_config.data.source, tiny_config.data.text_files = 'text_files', str(path)
  tiny_config.data.val_fraction = 0.1
  ((name, train_text),) = sources.split_documents(tiny_config.data)[0]
  ((_, val_text),) = sources.split_documents(tiny_config.data)[1]
  assert train_text + val_text == path.read_text() and val_text.startswith('line 9')
  assert len(val_text) == pytest.approx(0.1 * len(path.read_text()), rel=0.05)


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


def test_one_hash_split_holds_out_the_smallest_hashes_in_input_order():
  names = [f'module_{i}.py' for i in range(100)]
  train, val = sources.split_by_hash(names, names, 0.05)
  assert len(val) == 5 and sorted(train + val) == sorted(names)
  assert val == sorted(val, key=names.index) and train == sorted(train, key=names.index)
  more = names + ['new.py']
  assert set(sources.split_by_hash(more, more, 0.05)[1]) - {'new.py'} <= set(val)  # barely moves
  pair_list = [(name, 'target') for name in names]
  assert pairs.split_by_source_hash(pair_list, 0.05)[1] == [(name, 'target') for name in val]


def test_a_text_file_that_is_not_all_utf8_is_read_with_one_warning_counting_its_bad_bytes(
  tmp_path, capsys
):
  (tmp_path / 'good.txt').write_text('plain text\n')
  (tmp_path / 'latin1.txt').write_bytes('caf\u00e9\nna\u00efve \u00e0 la\n'.encode('latin-1'))
  docs = dict(sources.text_file_documents(str(tmp_path / '*.txt')))
  # Read as they always were (so token caches do not change): each bad byte a U+FFFD.
  assert docs[str(tmp_path / 'latin1.txt')] == 'caf\ufffd\nna\ufffdve \ufffd la\n'
  assert docs[str(tmp_path / 'good.txt')] == 'plain text\n'
  warnings = capsys.readouterr().err.strip().splitlines()
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(f'warning: {tmp_path / "latin1.txt"} is not all UTF-8: 3 of its')
  assert 'line 1' in warnings[0]
