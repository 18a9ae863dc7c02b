"""gptjax's tokenizers as Hugging Face tokenizer files (python -m gptjax.convert to_hf).

tokenizer_files(tokenizer) returns tokenizer.json, written with the `tokenizers` package, and the
tokenizer_config.json that makes transformers.AutoTokenizer.from_pretrained load it as it is
(PreTrainedTokenizerFast), so that tokenizer(text)['input_ids'] are gptjax's encode(text) and
decode(ids, skip_special_tokens=True) its decode(ids). Each kind is one `tokenizers` BPE model:

  byte            the 262 ids as vocabulary, no merges, byte fallback: every character becomes
                  the <0xXX> tokens of its UTF-8 bytes, ids 6-261.
  char            the same plus one token per kept character: a character in the vocabulary is
                  its token, any other falls back to its bytes, as CharTokenizer does.
  sentencepiece   SentencePiece's pieces with U+2581 written as the space it stands for, and as
                  merges every split of a piece into two pieces, ranked by the piece's score.
                  BPE then merges as SentencePiece does (the highest-scoring adjacent pair
                  first), over the raw text: no normalizer or pre-tokenizer, as the model was
                  trained with normalization 'identity' and no dummy prefix. A literal U+2581 is in
                  no piece any more, so it falls back to its three byte tokens: what gptjax's
                  SentencePieceTokenizer encodes it as.
  gpt2            GPT-2's vocab.json and merges.txt with its byte-level pre-tokenizer and decoder;
                  the three fine-tuning markers after the vocabulary are added tokens. vocab.json
                  and merges.txt are written too, for GPT2Tokenizer.

gptjax encodes text that spells a special token ('<s>', '<|endoftext|>') as ordinary text; the
config's split_special_tokens=true makes transformers do the same (a bare tokenizers.Tokenizer
read from tokenizer.json matches such text as the special token). No BOS is added: gptjax's
models saw each document as BOS, its tokens, EOS, so prepend tokenizer.bos_token_id to a prompt.
"""

import json

import tokenizers
from sentencepiece import sentencepiece_model_pb2

from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError

_BYTE_TOKENS = [f'<0x{b:02X}>' for b in range(256)]

# sentencepiece_model.proto's ModelProto.SentencePiece.Type and TrainerSpec.ModelType.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_SP_BPE = 2


def tokenizer_files(tokenizer: tokenizer_lib.Tokenizer, model_max_length: int) -> dict[str, bytes]:
  """File name -> contents of the Hugging Face tokenizer that encodes as `tokenizer` does."""
  files = {}
  if isinstance(tokenizer, tokenizer_lib.ByteTokenizer):
    backend = _byte_fallback_bpe(list(tokenizer_lib.SPECIALS) + _BYTE_TOKENS)
    specials = list(tokenizer_lib.SPECIALS)
  elif isinstance(tokenizer, tokenizer_lib.CharTokenizer):
    backend = _byte_fallback_bpe(list(tokenizer_lib.SPECIALS) + _BYTE_TOKENS + tokenizer.chars)
    specials = list(tokenizer_lib.SPECIALS)
  elif isinstance(tokenizer, tokenizer_lib.SentencePieceTokenizer):
    backend, specials = _sentencepiece_bpe(tokenizer)
  elif isinstance(tokenizer, tokenizer_lib.GPT2Tokenizer):
    backend, specials = _gpt2_bpe(tokenizer)
    files['vocab.json'] = json.dumps(tokenizer.vocab, ensure_ascii=False).encode()
    merges = ''.join(f'{a} {b}\n' for a, b in tokenizer.merges)
    files['merges.txt'] = ('#version: 0.2\n' + merges).encode()
  else:
    raise UserError(
      f'tokenizer.kind={tokenizer.kind!r} has no Hugging Face tokenizer here; export a run with a '
      "'sentencepiece', 'byte', 'char' or 'gpt2' tokenizer"
    )
  ids = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id]
  ids += [tokenizer.start_id, tokenizer.delim_id, tokenizer.extract_id]
  backend.add_special_tokens(
    [tokenizers.AddedToken(s, special=True, normalized=False) for s in specials]
  )
  token = {i: backend.id_to_token(i) for i in ids}
  if any(token[i] is None for i in ids):  # a tokenizer these conversions do not expect
    raise UserError(f'the {tokenizer.kind} tokenizer has special ids without a token: {ids}')
  _check_encodes_alike(tokenizer, backend)
  files['tokenizer.json'] = backend.to_str(pretty=True).encode()
  pad, bos, eos, *markers = (token[i] for i in ids)
  config = {
    'tokenizer_class': 'PreTrainedTokenizerFast',
    'bos_token': bos,
    'eos_token': eos,
    'pad_token': pad,
    # The fine-tuning markers START, DELIM, EXTRACT, so that decoding skips them.
    'extra_special_tokens': markers,
    'additional_special_tokens': markers,  # their name before transformers 5
    # gptjax encodes text spelling a special token as ordinary text.
    'split_special_tokens': True,
    'clean_up_tokenization_spaces': False,
    'model_max_length': model_max_length,
  }
  if isinstance(tokenizer, tokenizer_lib.SentencePieceTokenizer):
    config['unk_token'] = backend.id_to_token(tokenizer.sp.unk_id())
  files['tokenizer_config.json'] = json.dumps(config, indent=2, ensure_ascii=False).encode()
  return files


# Text the Hugging Face tokenizer is checked to encode as gptjax's does before it is written.
PROBES = (
  'def f(x):\n    return x  # comment\n\n\tz = [1, 2]\r\n',
  '  leading and  double  spaces, trailing ',
  'naïve café, Ａ ﬁ ½ 你好 🐍 \u2581 x\u2581y \u2581\u2581',
  '<s></s><pad><unk><start><delim><extract><|endoftext|>',
  '\x00\x7f\u200b\ufeff',
)


def _check_encodes_alike(tokenizer: tokenizer_lib.Tokenizer, backend: tokenizers.Tokenizer) -> None:
  backend.encode_special_tokens = True  # what split_special_tokens sets in transformers
  for text in PROBES:
    theirs = backend.encode(text, add_special_tokens=False).ids
    if theirs != tokenizer.encode(text):
      raise UserError(
        f'the Hugging Face version of this {tokenizer.kind} tokenizer encodes {text!r} '
        'differently from gptjax; it cannot be exported exactly'
      )


def _byte_fallback_bpe(tokens: list[str]) -> tokenizers.Tokenizer:
  """A BPE without merges over `tokens` (id = position), whose other characters are bytes."""
  vocab = {t: i for i, t in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise UserError('the tokenizer has a token twice; it cannot be written as a Hugging Face one')
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, [], byte_fallback=True))
  _byte_decoding(backend)
  return backend


def _byte_decoding(backend: tokenizers.Tokenizer) -> None:
  """<0xXX> tokens decode as their bytes (joined into characters), every other token as itself;
  nothing is added around the ids."""
  backend.decoder = tokenizers.decoders.Sequence(
    [tokenizers.decoders.ByteFallback(), tokenizers.decoders.Fuse()]
  )
  # A post-processor of its own, so that transformers does not make one adding a BOS.
  backend.post_processor = tokenizers.processors.TemplateProcessing(single='$A', pair='$A $B')


def _sentencepiece_bpe(
  tokenizer: tokenizer_lib.SentencePieceTokenizer,
) -> tuple[tokenizers.Tokenizer, list[str]]:
  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(tokenizer.model_proto)
  _check_sentencepiece(model)
  vocab, scores, specials = {}, {}, []
  for i, piece in enumerate(model.pieces):
    if piece.type == _NORMAL:
      name = piece.piece.replace(tokenizer_lib._SP_SPACE, ' ')
      scores[name] = piece.score
    elif piece.type in (_UNKNOWN, _CONTROL, _BYTE):
      name = piece.piece
      if piece.type != _BYTE:
        specials.append(name)
    else:
      raise UserError(
        f'the SentencePiece model has piece {piece.piece!r} of type {piece.type} (user-defined '
        'or unused), which gptjax never trains and this conversion does not reproduce'
      )
    if name in vocab:
      raise UserError(f'the SentencePiece model has the piece {piece.piece!r} twice')
    vocab[name] = i
  missing = [t for t in _BYTE_TOKENS if t not in vocab]
  if missing:
    raise UserError(f'the SentencePiece model has no byte fallback pieces ({missing[0]}, ...)')
  # Every way to make a piece from two pieces; the best-scoring piece's merges first.
  ranked = sorted(
    (-score, vocab[name], k, name[:k], name[k:])
    for name, score in scores.items()
    for k in range(1, len(name))
    if name[:k] in scores and name[k:] in scores
  )
  merges = [(left, right) for *_, left, right in ranked]
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, byte_fallback=True))
  _byte_decoding(backend)
  return backend, specials


def _check_sentencepiece(model) -> None:
  """The model is what SentencePieceTokenizer.train makes: the settings the conversion relies on."""
  trainer, normalizer = model.trainer_spec, model.normalizer_spec
  expected = {
    'model_type': (trainer.model_type, _SP_BPE),
    'byte_fallback': (trainer.byte_fallback, True),
    'treat_whitespace_as_suffix': (trainer.treat_whitespace_as_suffix, False),
    'normalization_rule_name': (normalizer.name, 'identity'),
    'add_dummy_prefix': (normalizer.add_dummy_prefix, False),
    'remove_extra_whitespaces': (normalizer.remove_extra_whitespaces, False),
    'escape_whitespaces': (normalizer.escape_whitespaces, True),
  }
  for field, (value, want) in expected.items():
    if value != want:
      raise UserError(
        f'the SentencePiece model has {field}={value!r}, not {want!r} as gptjax trains it; '
        'its encoding cannot be reproduced exactly by a Hugging Face tokenizer'
      )
  if normalizer.precompiled_charsmap:
    raise UserError(
      'the SentencePiece model has a normalization charsmap; gptjax trains with none, and this '
      'conversion does not reproduce one'
    )


def _gpt2_bpe(tokenizer: tokenizer_lib.GPT2Tokenizer) -> tuple[tokenizers.Tokenizer, list[str]]:
  vocab = dict(tokenizer.vocab)
  markers = []
  for base, token_id in zip(
    tokenizer_lib.SPECIALS[3:], (tokenizer.start_id, tokenizer.delim_id, tokenizer.extract_id)
  ):
    word = base[1:-1]
    name = next((n for n in (base, f'<|{word}|>', f'<|gptjax_{word}|>') if n not in vocab), None)
    if name is None:
      raise UserError(f'the GPT-2 vocabulary already has tokens named like the marker {base}')
    vocab[name] = token_id
    markers.append(name)
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, tokenizer.merges))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = tokenizers.decoders.ByteLevel()
  backend.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
  return backend, [tokenizer.END_OF_TEXT, *markers]
