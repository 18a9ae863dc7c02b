"""Tokenizers: SentencePiece BPE (the default), byte-level and character-level.

All three share one interface and a fixed set of special tokens:
  PAD, BOS, EOS   padding, begin and end of a document;
  START, DELIM, EXTRACT   the GPT-1 fine-tuning markers (Radford et al. 2018, section 3.3).
Every string can be encoded and decoded back exactly: characters a tokenizer does not know are
written as their UTF-8 bytes (SentencePiece's byte fallback; the character tokenizer does the same).
"""
import abc
import io
import json
import os
from collections.abc import Iterable, Iterator

import sentencepiece as spm

from gptjax.errors import UserError

SPECIALS = ('<pad>', '<s>', '</s>', '<start>', '<delim>', '<extract>')
# SentencePiece turns spaces into this character (U+2581) and back, so a literal one in the input
# would decode as a space. We encode it as its three UTF-8 byte tokens instead.
_SP_SPACE = '\u2581'


class Tokenizer(abc.ABC):
  """Text <-> token ids. Subclasses define the vocabulary and the ids of the SPECIALS."""
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
  vocab_size = len(SPECIALS) + 256

  def encode(self, text: str) -> list[int]:
    return [b + self.byte_offset for b in text.encode('utf-8')]


class CharTokenizer(_ByteVocabulary):
  """One token per frequent character; other characters fall back to their UTF-8 bytes."""

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

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self.sp.get_piece_size()
    self.pad_id, self.bos_id, self.eos_id, self.start_id, self.delim_id, self.extract_id = (
        self.sp.piece_to_id(p) for p in SPECIALS)
    self._sp_space_ids = [self.sp.piece_to_id(f'<0x{b:02X}>') for b in _SP_SPACE.encode('utf-8')]

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int, max_sentences: int = 300_000,
            seed: int = 0) -> 'SentencePieceTokenizer':
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # which sentences are sampled when there are too many
    spm.SentencePieceTrainer.train(
        sentence_iterator=_chunks(texts), model_writer=model, model_type='bpe',
        vocab_size=vocab_size, byte_fallback=True, character_coverage=0.9995,
        # Keep text as it is: code depends on exact whitespace and newlines.
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, max_sentence_length=4096,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, control_symbols=list(SPECIALS[3:]),
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1, minloglevel=2)
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


TOKENIZER_FILES = {'sentencepiece': 'tokenizer.model', 'char': 'tokenizer_chars.json'}


def load_or_train(kind: str, vocab_size: int, directory: str,
                  texts: Iterable[str] | None = None) -> Tokenizer:
  """The tokenizer saved in `directory`, or a new one trained on `texts` and saved there."""
  if kind == 'byte':
    return ByteTokenizer()
  if kind not in TOKENIZER_FILES:
    raise UserError(f"unknown tokenizer.kind {kind!r}; use 'sentencepiece', 'byte' or 'char'")
  path = os.path.join(directory, TOKENIZER_FILES[kind])
  if os.path.exists(path):
    tokenizer = _load(kind, path)
    if tokenizer.vocab_size != vocab_size:
      raise UserError(f'{path} has vocab_size {tokenizer.vocab_size} but the config asks for '
                      f'{vocab_size}; use a new workdir or the same vocab_size')
    return tokenizer
  if texts is None:
    raise UserError(f'no tokenizer at {path}')
  try:
    tokenizer = (SentencePieceTokenizer.train(texts, vocab_size) if kind == 'sentencepiece' else
                 CharTokenizer.train(texts, vocab_size))
  except RuntimeError as e:  # SentencePiece's trainer reports bad settings this way
    raise UserError(f'could not train the tokenizer: {e}') from None
  _save(tokenizer, path)
  return tokenizer


def _load(kind: str, path: str) -> Tokenizer:
  with open(path, 'rb') as f:
    data = f.read()
  if kind == 'sentencepiece':
    return SentencePieceTokenizer(data)
  saved = json.loads(data)
  return CharTokenizer(saved['chars'], saved['vocab_size'])


def _save(tokenizer: Tokenizer, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = (tokenizer.model_proto if isinstance(tokenizer, SentencePieceTokenizer) else
          json.dumps({'chars': tokenizer.chars, 'vocab_size': tokenizer.vocab_size}).encode())
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)  # atomic: a crash never leaves half a tokenizer behind
