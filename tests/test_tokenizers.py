import os

import hypothesis
import hypothesis.strategies as st
import pytest
from conftest import write_gpt2_tokenizer_files

from gptjax.data import sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

# Text the tokenizers were not trained on: any Unicode, including the SentencePiece space marker
# U+2581, control characters, surrogate-free astral characters and runs of whitespace.
ANY_TEXT = st.text(st.characters(blacklist_categories=('Cs',)), max_size=200)
TRICKY = [
  '',
  ' ',
  '\n\n  \t',
  'x\u2581y',
  '\u2581\u2581',
  '\x00\r\n',
  'naïve café 你好 🐍',
  '<start><delim><extract>',
  '<s></s><pad><unk>',
]


@pytest.fixture(scope='module')
def stdlib_texts():
  return [text for _, text in list(sources.stdlib_documents())[:60]]


@pytest.fixture(scope='module')
def sentencepiece(stdlib_texts, tmp_path_factory):
  return tokenizer_lib.load_or_train(
    'sentencepiece', 600, str(tmp_path_factory.mktemp('sp')), stdlib_texts
  )


@pytest.fixture(scope='module')
def char(stdlib_texts):
  return tokenizer_lib.CharTokenizer.train(stdlib_texts, vocab_size=300)


@pytest.fixture(scope='module')
def gpt2(stdlib_texts, tmp_path_factory):
  directory = tmp_path_factory.mktemp('gpt2')
  write_gpt2_tokenizer_files(directory, stdlib_texts, vocab_size=600)
  return tokenizer_lib.GPT2Tokenizer.from_files(
    os.path.join(directory, 'vocab.json'), os.path.join(directory, 'merges.txt'), 600
  )


def _tokenizers(sentencepiece, char):
  return {'sentencepiece': sentencepiece, 'byte': tokenizer_lib.ByteTokenizer(), 'char': char}


@pytest.mark.parametrize('text', TRICKY + ['<|endoftext|>'])
@pytest.mark.parametrize('kind', ['sentencepiece', 'byte', 'char', 'gpt2'])
def test_round_trip_on_tricky_text(kind, text, sentencepiece, char, gpt2):
  tok = {**_tokenizers(sentencepiece, char), 'gpt2': gpt2}[kind]
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert all(0 <= i < tok.vocab_size for i in ids)


@pytest.mark.parametrize('kind', ['sentencepiece', 'byte', 'char', 'gpt2'])
def test_round_trip_on_arbitrary_unicode(kind, sentencepiece, char, gpt2):
  tok = {**_tokenizers(sentencepiece, char), 'gpt2': gpt2}[kind]

  @hypothesis.settings(max_examples=150, deadline=None)
  @hypothesis.given(ANY_TEXT)
  def round_trip(text):
    assert tok.decode(tok.encode(text)) == text

  round_trip()


def test_special_tokens_are_distinct_reserved_and_never_produced_from_text(sentencepiece, char):
  for tok in _tokenizers(sentencepiece, char).values():
    specials = [tok.pad_id, tok.bos_id, tok.eos_id, tok.start_id, tok.delim_id, tok.extract_id]
    assert len(set(specials)) == 6
    assert not set(tok.encode('<s> </s> <pad> <start> <delim> <extract>')) & set(specials)
    assert tok.decode(specials) == ''


def test_bpe_compresses_code_and_learns_indentation(sentencepiece, stdlib_texts):
  text = stdlib_texts[0]
  ids = sentencepiece.encode(text)
  assert len(ids) < 0.6 * len(text.encode('utf-8'))  # a 600-piece vocabulary: ~1.8 bytes/token
  assert any(
    sentencepiece.sp.id_to_piece(i) == '\u2581' * 4 for i in range(sentencepiece.vocab_size)
  )


def test_trained_tokenizers_are_saved_and_reused(tmp_path, stdlib_texts):
  for kind in ('sentencepiece', 'char'):
    first = tokenizer_lib.load_or_train(kind, 400, str(tmp_path), stdlib_texts[:20])
    # No texts the second time: it must come from the file.
    again = tokenizer_lib.load_or_train(kind, 400, str(tmp_path))
    sample = stdlib_texts[21][:2000]
    assert again.encode(sample) == first.encode(sample)
    with pytest.raises(UserError, match='vocab_size'):
      tokenizer_lib.load_or_train(kind, 512, str(tmp_path))


def test_sentencepiece_training_is_deterministic(tmp_path, stdlib_texts):
  a = tokenizer_lib.SentencePieceTokenizer.train(stdlib_texts[:20], 400)
  b = tokenizer_lib.SentencePieceTokenizer.train(stdlib_texts[:20], 400)
  assert a.model_proto == b.model_proto


def test_char_tokenizer_keeps_the_most_frequent_characters():
  tok = tokenizer_lib.CharTokenizer.train(
    ['aaab', 'bc'], vocab_size=len(tokenizer_lib.SPECIALS) + 258
  )
  assert tok.chars == ['a', 'b']
  assert len(tok.encode('abc')) == 3  # 'c' falls back to its one UTF-8 byte
  assert tok.encode('ab') != tokenizer_lib.ByteTokenizer().encode('ab')


def test_gpt2_maps_the_specials_onto_endoftext_and_appends_the_markers(gpt2, tmp_path):
  end_of_text = gpt2.vocab['<|endoftext|>']
  assert gpt2.pad_id == gpt2.bos_id == gpt2.eos_id == end_of_text
  assert [gpt2.start_id, gpt2.delim_id, gpt2.extract_id] == [600, 601, 602]
  assert gpt2.vocab_size == 603
  assert end_of_text not in gpt2.encode('<|endoftext|> <s> </s>')  # text is never a special token
  assert gpt2.decode([end_of_text, *gpt2.encode('x = 1'), 600, 601, 602]) == 'x = 1'
  # Saved into a workdir, it is what load_or_train finds there; it cannot be trained.
  tokenizer_lib.save(gpt2, str(tmp_path))
  again = tokenizer_lib.load_or_train('gpt2', 603, str(tmp_path))
  assert again.encode('def f(x):\n  return x') == gpt2.encode('def f(x):\n  return x')
  with pytest.raises(UserError, match='gptjax.convert'):
    tokenizer_lib.load_or_train('gpt2', 603, str(tmp_path / 'new'), ['some text'])


def test_unknown_kind_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='tokenizer.kind'):
    tokenizer_lib.load_or_train('wordpiece', 1000, str(tmp_path), ['x'])


def test_sentencepiece_on_binary_input_names_gptjax_settings_not_its_own(tmp_path):
  import numpy as np

  noise = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
  text = noise.decode('utf-8', errors='replace') + ''.join(chr(0x4E00 + i) for i in range(1000))
  with pytest.raises(UserError) as raised:
    tokenizer_lib.load_or_train('sentencepiece', 512, str(tmp_path), [text])
  message = str(raised.value)
  assert 'distinct characters, more than tokenizer.vocab_size=512' in message, message
  assert 'data.text_files' in message and 'character_coverage' not in message
  assert 'src/' not in message and not os.listdir(tmp_path)
