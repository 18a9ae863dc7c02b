"""Tokenizers: SentencePiece BPE (the default), byte-level, character-level and GPT-2's.

All four share one interface and a fixed set of special tokens:
  PAD, BOS, EOS   padding, begin and end of a document;
  START, DELIM, EXTRACT   the GPT-1 fine-tuning markers (Radford et al. 2018, section 3.3).
Every string can be encoded and decoded back exactly: characters a tokenizer does not know are
written as their UTF-8 bytes (SentencePiece's byte fallback; the character tokenizer does the same;
GPT-2's byte-level BPE has a token for every byte).
"""

import abc
import io
import json
import os
import re
from collections.abc import Iterable, Iterator

import sentencepiece as spm

from gptjax.data.atomic import write_atomic
from gptjax.errors import UserError

SPECIALS = ('<pad>', '<s>', '</s>', '<start>', '<delim>', '<extract>')
# SentencePiece turns spaces into this character (U+2581) and back, so a literal one in the input
# would decode as a space. We encode it as its three UTF-8 byte tokens instead.
_SP_SPACE = '\u2581'


def _hf_tokenizers():
  """Hugging Face's tokenizers package, which only GPT-2's tokenizer needs (the [hf] extra)."""
  try:
    import tokenizers
  except ImportError:
    raise UserError(
      "tokenizer kind 'gpt2' needs Hugging Face's tokenizers: pip install 'gptjax[hf]'"
    ) from None
  return tokenizers


class Tokenizer(abc.ABC):
  """Text <-> token ids. Subclasses define the vocabulary and the ids of the SPECIALS."""

  kind: str  # the config's tokenizer.kind
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int
  start_id: int
  delim_id: int
  extract_id: int

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS/EOS."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; special tokens decode to nothing."""

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]


class _ByteVocabulary(Tokenizer):
  """Specials at ids 0-5, the 256 bytes at 6-261; subclasses may add tokens after them."""

  pad_id, bos_id, eos_id, start_id, delim_id, extract_id = range(len(SPECIALS))
  byte_offset = len(SPECIALS)

  def _bytes_of(self, token_id: int) -> bytes:
    if self.byte_offset <= token_id < self.byte_offset + 256:
      return bytes([token_id - self.byte_offset])
    return b''

  def decode(self, ids: Iterable[int]) -> str:
    return b''.join(self._bytes_of(int(i)) for i in ids).decode('utf-8', errors='replace')


class ByteTokenizer(_ByteVocabulary):
  kind = 'byte'
  vocab_size = len(SPECIALS) + 256

  def encode(self, text: str) -> list[int]:
    return [b + self.byte_offset for b in text.encode('utf-8')]


class CharTokenizer(_ByteVocabulary):
  """One token per frequent character; other characters fall back to their UTF-8 bytes."""

  kind = 'char'

  def __init__(self, chars: list[str], vocab_size: int):
    first = self.byte_offset + 256
    if first + len(chars) > vocab_size:
      raise ValueError(f'{len(chars)} characters do not fit in vocab_size {vocab_size}')
    self.chars = chars
    self._id_of = {c: first + i for i, c in enumerate(chars)}
    self.vocab_size = vocab_size  # ids past the last character are never produced

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int) -> 'CharTokenizer':
    """The (vocab_size - 262) most frequent characters; ties broken by code point."""
    counts: dict[str, int] = {}
    for text in texts:
      for c in text:
        counts[c] = counts.get(c, 0) + 1
    n_chars = max(vocab_size - len(SPECIALS) - 256, 0)
    return cls(sorted(sorted(counts), key=lambda c: -counts[c])[:n_chars], vocab_size)

  def encode(self, text: str) -> list[int]:
    ids = []
    for c in text:
      if c in self._id_of:
        ids.append(self._id_of[c])
      else:
        ids.extend(b + self.byte_offset for b in c.encode('utf-8'))
    return ids

  def _bytes_of(self, token_id: int) -> bytes:
    if token_id >= self.byte_offset + 256:
      return self.chars[token_id - self.byte_offset - 256].encode('utf-8')
    return super()._bytes_of(token_id)


class SentencePieceTokenizer(Tokenizer):
  """BPE over text with whitespace and newlines kept verbatim (no normalisation), byte fallback."""

  kind = 'sentencepiece'

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self.sp.get_piece_size()
    self.pad_id, self.bos_id, self.eos_id, self.start_id, self.delim_id, self.extract_id = (
      self.sp.piece_to_id(p) for p in SPECIALS
    )
    self._sp_space_ids = [self.sp.piece_to_id(f'<0x{b:02X}>') for b in _SP_SPACE.encode('utf-8')]

  @classmethod
  def train(
    cls, texts: Iterable[str], vocab_size: int, max_sentences: int = 300_000, seed: int = 0
  ) -> 'SentencePieceTokenizer':
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # which sentences are sampled when there are too many
    spm.SentencePieceTrainer.train(
      sentence_iterator=_chunks(texts),
      model_writer=model,
      model_type='bpe',
      vocab_size=vocab_size,
      byte_fallback=True,
      character_coverage=0.9995,
      # Keep text as it is: code depends on exact whitespace and newlines.
      normalization_rule_name='identity',
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      max_sentence_length=4096,
      pad_id=0,
      bos_id=1,
      eos_id=2,
      unk_id=3,
      control_symbols=list(SPECIALS[3:]),
      input_sentence_size=max_sentences,
      shuffle_input_sentence=True,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
    )
    return cls(model.getvalue())

  def encode(self, text: str) -> list[int]:
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    if not any(_SP_SPACE in t for t in texts):
      return self.sp.encode(texts)
    return [self._encode_with_sp_space(t) for t in texts]

  def _encode_with_sp_space(self, text: str) -> list[int]:
    pieces = text.split(_SP_SPACE)
    ids = []
    for i, ids_piece in enumerate(self.sp.encode(pieces)):
      if i:
        ids.extend(self._sp_space_ids)
      ids.extend(ids_piece)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    return self.sp.decode([int(i) for i in ids])


class GPT2Tokenizer(Tokenizer):
  """GPT-2's byte-level BPE (vocab.json + merges.txt), run by the `tokenizers` package.

  GPT-2 has one special token, <|endoftext|>, which it puts between documents: PAD, BOS and EOS
  are all that token. It has no fine-tuning markers, so START, DELIM and EXTRACT are three new ids
  right after the model's vocabulary (vocab_size - 3 .. vocab_size - 1); a converted model gets
  embedding rows for them. Like every tokenizer here, text that spells a special token, such as
  "<|endoftext|>", is encoded as ordinary text.
  """

  kind = 'gpt2'
  END_OF_TEXT = '<|endoftext|>'
  N_MARKERS = len(SPECIALS[3:])  # START, DELIM, EXTRACT

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], vocab_size: int):
    self.vocab, self.merges, self.vocab_size = vocab, merges, vocab_size
    self.pad_id = self.bos_id = self.eos_id = vocab[self.END_OF_TEXT]
    self.start_id, self.delim_id, self.extract_id = range(vocab_size - self.N_MARKERS, vocab_size)
    self._text_ids = frozenset(vocab.values()) - {self.eos_id}
    tokenizers = _hf_tokenizers()
    self._bpe = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    self._bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    self._bpe.decoder = tokenizers.decoders.ByteLevel()

  @classmethod
  def from_files(cls, vocab_json: str, merges_txt: str, model_vocab_size: int) -> 'GPT2Tokenizer':
    """The tokenizer of a Hugging Face GPT-2 directory, for a model with model_vocab_size tokens."""
    vocab, merges = _hf_tokenizers().models.BPE.read_file(vocab_json, merges_txt)
    if cls.END_OF_TEXT not in vocab:
      raise UserError(f'{vocab_json} has no {cls.END_OF_TEXT} token')
    if max(vocab.values()) >= model_vocab_size:
      raise UserError(
        f'{vocab_json} has ids up to {max(vocab.values())} but the model has only '
        f'{model_vocab_size} tokens'
      )
    return cls(vocab, merges, model_vocab_size + cls.N_MARKERS)

  def encode(self, text: str) -> list[int]:
    return self._bpe.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self._bpe.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    return self._bpe.decode([i for i in map(int, ids) if i in self._text_ids])


def _chunks(texts: Iterable[str], max_chars: int = 2000) -> Iterator[str]:
  """Groups of whole lines, so BPE can learn pieces that contain newlines and indentation."""
  for text in texts:
    chunk = ''
    for line in text.splitlines(keepends=True):
      if chunk and len(chunk) + len(line) > max_chars:
        yield chunk
        chunk = ''
      chunk += line[:max_chars]
    if chunk:
      yield chunk


TOKENIZER_FILES = {
  'sentencepiece': 'tokenizer.model',
  'char': 'tokenizer_chars.json',
  'gpt2': 'tokenizer_gpt2.json',
}


def load_or_train(
  kind: str, vocab_size: int, directory: str, texts: Iterable[str] | None = None
) -> Tokenizer:
  """The tokenizer saved in `directory`, or a new one trained on `texts` and saved there.

  GPT-2's tokenizer is not trained here: python -m gptjax.convert hf_gpt2 saves it.
  """
  if kind == 'byte':
    return ByteTokenizer()
  if kind not in TOKENIZER_FILES:
    raise UserError(
      f"unknown tokenizer.kind {kind!r}; use 'sentencepiece', 'byte', 'char' or 'gpt2'"
    )
  path = os.path.join(directory, TOKENIZER_FILES[kind])
  if os.path.exists(path):
    tokenizer = _load(kind, path)
    if tokenizer.vocab_size != vocab_size:
      raise UserError(
        f'{path} has vocab_size {tokenizer.vocab_size} but the config asks for '
        f'{vocab_size}; use a new workdir or the same vocab_size'
      )
    return tokenizer
  if kind == 'gpt2':
    raise UserError(
      f'no GPT-2 tokenizer at {path}; make the workdir with python -m gptjax.convert hf_gpt2'
    )
  if texts is None:
    raise UserError(f'no tokenizer at {path}')
  try:
    tokenizer = (
      SentencePieceTokenizer.train(texts, vocab_size)
      if kind == 'sentencepiece'
      else CharTokenizer.train(texts, vocab_size)
    )
  except RuntimeError as e:  # SentencePiece's trainer reports bad settings this way
    raise UserError(_training_failure(str(e), kind, vocab_size)) from None
  save(tokenizer, directory)
  return tokenizer


def _training_failure(message: str, kind: str, vocab_size: int) -> str:
  """SentencePiece's trainer error in gptjax's terms: it names its own flags (character_coverage),
  which are not gptjax settings, and its source lines."""
  too_many = re.search(r'smaller than required_chars\. (\d+) vs (\d+)', message)
  if too_many:
    return (
      f'could not train the {kind} tokenizer: the training text holds {too_many.group(2)} '
      f'distinct characters, more than tokenizer.vocab_size={vocab_size} can cover. If the '
      'data source (data.source, data.text_files) is binary or not UTF-8 text (see the '
      'warnings above), point it at text; else raise tokenizer.vocab_size, or use '
      'tokenizer.kind=byte'
    )
  message = re.sub(r'^\w+: src/\S+ \[.*?\] ', '', ' '.join(message.split()))
  return f'could not train the {kind} tokenizer (tokenizer.vocab_size={vocab_size}): {message}'


def _load(kind: str, path: str) -> Tokenizer:
  """The tokenizer saved at `path`; a UserError naming the file when it does not parse."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    if kind == 'sentencepiece':
      return SentencePieceTokenizer(data)
    saved = json.loads(data)
    if kind == 'gpt2':
      return GPT2Tokenizer(saved['vocab'], [tuple(m) for m in saved['merges']], saved['vocab_size'])
    return CharTokenizer(saved['chars'], saved['vocab_size'])
  except Exception as e:  # pylint: disable=broad-except  # SentencePiece, json, tokenizers, keys
    problem = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
  raise UserError(
    f'{path} is not a readable {kind} tokenizer ({problem}); put the original back (the token '
    'caches and checkpoints of this workdir were made with it), or use a new workdir'
  )


def save(tokenizer: Tokenizer, directory: str) -> None:
  """Writes `tokenizer` to its file in `directory`, where load_or_train finds it."""
  path = os.path.join(directory, TOKENIZER_FILES[tokenizer.kind])
  os.makedirs(directory, exist_ok=True)
  if isinstance(tokenizer, SentencePieceTokenizer):
    data = tokenizer.model_proto
  elif isinstance(tokenizer, GPT2Tokenizer):
    data = json.dumps(
      {'vocab': tokenizer.vocab, 'merges': tokenizer.merges, 'vocab_size': tokenizer.vocab_size}
    ).encode()
  else:
    data = json.dumps({'chars': tokenizer.chars, 'vocab_size': tokenizer.vocab_size}).encode()
  write_atomic(path, data)  # a crash never leaves half a tokenizer behind
