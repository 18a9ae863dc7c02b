"""Labelled tasks for fine-tuning (gptjax.finetune) and zero-/few-shot evaluation (gptjax.evaluate).

A task is a kind and up to three splits (train, validation, test) of examples, each a dict of
the kind's fields. JSONL files hold one example (a JSON object) per line:

  classification   {"text": str, "label": int}                   label in 0..num_labels-1
  entailment       {"premise": str, "hypothesis": str, "label": int}
  similarity       {"a": str, "b": str, "label": int}            a class; the order of a and b is
                                                                 irrelevant to the task
  multiple_choice  {"context": str, "choices": [str, ...], "label": int}   the answer is
                   choices[label], appended directly after the context (no space added)
  cloze            {"context": str, "target": str}               the target follows the context
                                                                 directly (LAMBADA-style)

The kind follows from the fields of the first line; every line must have the same fields with the
right types (other fields are allowed and ignored). A task spec (load_task) is one of:

  - a built-in name, STDLIB_TASKS below;
  - a TFDS name, TFDS_TASKS below (read with tfds.data_source; prepare the dataset first);
  - a JSONL file (its examples are the test split), a directory with train.jsonl,
    validation.jsonl and/or test.jsonl, or SPLIT=PATH pairs joined by commas
    (train=a.jsonl,validation=b.jsonl).

The built-in tasks come from the Python standard library corpus, and only from the documents that
pre-training on it holds out: the validation split of STDLIB_DATA below (the stdlib source, all
documents, val_fraction 0.02, as gptjax.data.sources.split_documents makes it), the split that
gptjax/configs/default.py trains on, so no pre-trained gptjax model has seen them. The settings
are fixed here, not read from a config, so that editing a config never changes the benchmark.
Those documents are divided into train / validation / test (60/20/20, stratified by test vs library
module, shuffled with the seed): every example of a split comes from that split's documents.

  stdlib_next_line   multiple choice: the 3 lines before a line as context; the choices are the
                     true next line and 3 lines from other documents of the split, re-indented
                     like the true line (indentation alone gives nothing away).
  stdlib_same_file   similarity: two 4-line snippets; label 1 if they come from the same module.
                     Half of the pairs are same-module pairs.
  stdlib_test_or_lib classification: a 6-line snippet; label 1 if it comes from a test module (a
                     path with a test/, tests/ or idle_test/ directory, or a test_*.py file), else
                     0. The classes are balanced within each split.
  stdlib_cloze       cloze: up to 4 lines and the start of a line; the target is the last
                     identifier on that line (what follows it is dropped). Only identifiers of
                     3+ characters that are not keywords and that already occur in the context
                     are used, so the answer can be read
                     from the context, as in LAMBADA; Python's tokenizer finds them, so names in
                     strings and comments never count.
  stdlib_brackets    multiple choice: the start of a line of code up to a run of closing brackets
                     ('    x = f(a[i'); the choices are that run ('])') and two other strings of as
                     many closing brackets (')]', '}]'), so chance is 1/3. Half the examples close
                     with ')' only, half with another bracket too (always choosing ')' scores
                     about 1/2). Contexts are at most 60 bytes. See _brackets.
  stdlib_rename_initials, stdlib_rename_camel, stdlib_rename_reversed, stdlib_rename_upper
                     multiple choice, few-shot learning: a snake_case identifier from the code as
                     context ('get_default_value ->'); the choices are four renamings of it, one
                     per RENAME_TRANSFORMS entry (' gdv', ' GetDefaultValue',
                     ' value_default_get', ' GET_DEFAULT_VALUE', shuffled); the answer is the one
                     the task's name says. See _rename for why this tests few-shot learning.

Run `python -m gptjax.tasks build --out DIR` to write them as JSONL (DIR/<task>/<split>.jsonl).
"""

import dataclasses
import io
import json
import keyword
import os
import re
import tokenize
import zlib

import ml_collections
import numpy as np

from gptjax.data import cache, sources
from gptjax.errors import UserError

KINDS = {
  'classification': {'text': str, 'label': int},
  'entailment': {'premise': str, 'hypothesis': str, 'label': int},
  'similarity': {'a': str, 'b': str, 'label': int},
  'multiple_choice': {'context': str, 'choices': list, 'label': int},
  'cloze': {'context': str, 'target': str},
}
SPLITS = ('train', 'validation', 'test')
STDLIB_TASKS = {
  'stdlib_next_line': 'multiple_choice',
  'stdlib_same_file': 'similarity',
  'stdlib_test_or_lib': 'classification',
  'stdlib_cloze': 'cloze',
  'stdlib_brackets': 'multiple_choice',
  'stdlib_rename_initials': 'multiple_choice',
  'stdlib_rename_camel': 'multiple_choice',
  'stdlib_rename_reversed': 'multiple_choice',
  'stdlib_rename_upper': 'multiple_choice',
}
# The renamings of the stdlib_rename_* tasks: a snake_case identifier's words -> the answer.
RENAME_TRANSFORMS = {
  'initials': lambda words: ''.join(w[0] for w in words),
  'camel': lambda words: ''.join(w[0].upper() + w[1:] for w in words),
  'reversed': lambda words: '_'.join(reversed(words)),
  'upper': lambda words: '_'.join(words).upper(),
}
# TFDS name -> (kind, {our field: TFDS feature}); STS-B's 0-5 scores are rounded to 6 classes.
TFDS_TASKS = {
  'glue/sst2': ('classification', {'text': 'sentence'}),
  'glue/rte': ('entailment', {'premise': 'sentence1', 'hypothesis': 'sentence2'}),
  'glue/stsb': ('similarity', {'a': 'sentence1', 'b': 'sentence2'}),
}
_TFDS_LABELS = {'glue/sst2': 2, 'glue/rte': 2, 'glue/stsb': 6}
# The pre-training data whose held-out documents the built-in tasks are made of (see the module
# docstring): the same documents as gptjax/configs/default.py's data, stated here once and for all.
STDLIB_DATA = ml_collections.FrozenConfigDict(
  {'source': 'stdlib', 'max_documents': 0, 'val_fraction': 0.02}
)

# Sizes of the built-in tasks' pieces: short enough that an example fits a 128-token context.
_MAX_LINE_CHARS = 100
_NEXT_LINE_CONTEXT = 3
_CLOZE_CONTEXT = 4
_MAX_CONTEXT_CHARS = 240
_PAIR_SNIPPET_LINES = 4
_CLASSIFY_SNIPPET_LINES = 6
_MAX_SNIPPET_CHARS = 360
# stdlib_brackets: contexts of at most this many bytes and runs of at most this many closing
# brackets, so that an example fits a 64-token context with any tokenizer that spends at most a
# token per byte; this many choices (chance is their inverse).
_MAX_BRACKET_CONTEXT_BYTES = 60
_MAX_BRACKET_RUN = 4
_BRACKET_CHOICES = 3
_OPENERS, _CLOSERS = '([{', ')]}'
_FSTRING_START, _FSTRING_END = (getattr(tokenize, n, -1) for n in ('FSTRING_START', 'FSTRING_END'))
# stdlib_rename_*: identifiers of 2+ lowercase words, at most this long, so that a demonstration
# ('name -> answer' and the separator) is at most 2 * 20 + 6 bytes: 8 of them and the example fit
# a 512-token context with any tokenizer that spends at most a token per byte.
_RENAME_PREFIX = 'stdlib_rename_'
_MAX_RENAME_CHARS = 20
_SNAKE_CASE = re.compile(r'[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)+')


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  kind: str  # a key of KINDS
  splits: dict[str, list[dict]]  # some of SPLITS -> examples
  num_labels: int = 0  # classes of classification, entailment and similarity; 0 otherwise

  def split(self, name: str) -> list[dict]:
    if name not in self.splits:
      raise UserError(f'task {self.name} has no {name} split (it has {", ".join(self.splits)})')
    return self.splits[name]


def load_task(spec: str, seed: int = 0, num_labels: int = 0, tfds_data_dir: str = '') -> Task:
  """The task `spec` names (see the module docstring). num_labels declares the classes of a
  JSONL classification, entailment or similarity task; 0 takes the largest label seen + 1."""
  if spec in STDLIB_TASKS:
    return build_stdlib_task(spec, seed)
  if spec.removeprefix('tfds:') in TFDS_TASKS:
    return load_tfds_task(spec.removeprefix('tfds:'), tfds_data_dir)
  if spec.startswith('tfds:'):
    raise UserError(f'TFDS task {spec!r} is not supported; use one of {", ".join(TFDS_TASKS)}')
  paths = _jsonl_paths(spec)
  splits, kind = {}, None
  for split, path in paths.items():
    examples, file_kind = read_jsonl(path)
    if kind is not None and file_kind != kind:
      raise UserError(f'{path} holds {file_kind} examples, the other files {kind} examples')
    kind = file_kind
    splits[split] = examples
  return Task(spec, kind, splits, _check_labels(kind, splits, paths, num_labels))


def _jsonl_paths(spec: str) -> dict[str, str]:
  if '=' in spec:
    paths = {}
    for part in spec.split(','):
      split, _, path = part.partition('=')
      if split not in SPLITS:
        raise UserError(f'task spec {spec!r}: {split!r} is not a split; use {", ".join(SPLITS)}')
      paths[split] = path
  elif os.path.isdir(spec):
    paths = {
      s: os.path.join(spec, f'{s}.jsonl')
      for s in SPLITS
      if os.path.isfile(os.path.join(spec, f'{s}.jsonl'))
    }
    if not paths:
      raise UserError(f'{spec} holds none of train.jsonl, validation.jsonl, test.jsonl')
  elif spec.endswith('.jsonl'):
    paths = {'test': spec}
  else:
    raise UserError(
      f'unknown task {spec!r}: not a built-in task ({", ".join(STDLIB_TASKS)}), '
      f'a TFDS task ({", ".join(TFDS_TASKS)}), a .jsonl file or a directory'
    )
  for path in paths.values():
    if not os.path.isfile(path):
      raise UserError(f'task file {path} does not exist')
  return paths


def read_jsonl(path: str) -> tuple[list[dict], str]:
  """The examples of a JSONL task file and their kind, every line checked."""
  examples, kind = [], None
  for where, example in sources.jsonl_objects(sources.utf8_lines(path), path):
    if kind is None:
      kind = _kind_of(example, where)
    check_example(example, kind, where)
    examples.append(example)
  if not examples:
    raise UserError(f'{path} holds no examples')
  return examples, kind


def _kind_of(example: dict, where: str) -> str:
  # The kind whose fields the example has; the one with most fields wins (cloze vs multiple choice).
  matches = [k for k, fields in KINDS.items() if set(fields) <= set(example)]
  if not matches:
    # The kinds it has most fields of: it lacks the rest (a missing label, say).
    overlap = {k: len(set(fields) & set(example)) for k, fields in KINDS.items()}
    closest = [k for k, n in overlap.items() if n and n == max(overlap.values())]
    if closest:
      raise UserError(
        f'{where}: missing field '
        + ' or '.join(
          f'{", ".join(repr(f) for f in KINDS[k] if f not in example)} ({k} examples have '
          f'{", ".join(KINDS[k])})'
          for k in closest
        )
        + f'; the example has {sorted(example)}'
      )
    raise UserError(
      f'{where}: the fields {sorted(example)} match no task kind; expected '
      + '; '.join(f'{k}: {", ".join(fields)}' for k, fields in KINDS.items())
    )
  return max(matches, key=lambda k: len(KINDS[k]))


def check_example(example: dict, kind: str, where: str) -> None:
  for field, field_type in KINDS[kind].items():
    if field not in example:
      raise UserError(f'{where}: missing field {field!r} of a {kind} example')
    value = example[field]
    if not isinstance(value, field_type) or isinstance(value, bool):
      raise UserError(f'{where}: field {field!r} must be {field_type.__name__}, got {value!r:.60}')
  if kind == 'multiple_choice':
    choices = example['choices']
    if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
      raise UserError(f'{where}: "choices" must be a list of 2 or more non-empty strings')
    if not 0 <= example['label'] < len(choices):
      raise UserError(
        f'{where}: label {example["label"]} is outside 0..{len(choices) - 1} '
        f'(the example has {len(choices)} choices)'
      )
  elif kind == 'cloze' and not example['target']:
    raise UserError(f'{where}: "target" is empty')
  elif 'label' in example and example['label'] < 0:
    raise UserError(f'{where}: label {example["label"]} is negative')


def _check_labels(
  kind: str, splits: dict[str, list[dict]], paths: dict[str, str], num_labels: int
) -> int:
  """The number of classes: num_labels if given, else one more than the largest training label;
  a label outside them is an error that names its file and example."""
  if kind in ('multiple_choice', 'cloze'):
    return 0
  if not num_labels:
    source = splits.get('train') or next(iter(splits.values()))
    num_labels = max(2, 1 + max(e['label'] for e in source))
  for split, examples in splits.items():
    for i, example in enumerate(examples):
      if example['label'] >= num_labels:
        raise UserError(
          f'{paths[split]}: example {i + 1} has label {example["label"]}, outside '
          f'the {num_labels} classes 0..{num_labels - 1} (set num_labels to declare more)'
        )
  return num_labels


def load_tfds_task(name: str, data_dir: str = '') -> Task:
  """A TFDS_TASKS dataset prepared in the ArrayRecord format (GLUE's test labels are hidden, so
  only train and validation)."""
  kind, features = TFDS_TASKS[name]
  splits = {}
  for split in ('train', 'validation'):
    examples = []
    for record in sources.tfds_records(name, split, data_dir, [*features.values(), 'label']):
      example = {field: sources.as_text(record[feature]) for field, feature in features.items()}
      example['label'] = int(round(float(record['label'])))
      examples.append(example)
    splits[split] = examples
  return Task(name, kind, splits, _TFDS_LABELS[name])


# --- Built-in tasks from the held-out standard library ---------------------------------------


def is_test_module(name: str) -> bool:
  *directories, filename = name.split('/')
  return any(d in ('test', 'tests', 'idle_test') for d in directories) or filename.startswith(
    'test_'
  )


def held_out_documents() -> list[sources.Document]:
  """The documents pre-training on STDLIB_DATA holds out for validation."""
  return sources.split_documents(STDLIB_DATA)[1]


def split_by_document(
  documents: list[sources.Document], seed: int
) -> dict[str, list[sources.Document]]:
  """train / validation / test = 60 / 20 / 20 % of the documents of each class (test or library
  module), shuffled with the seed."""
  splits = {s: [] for s in SPLITS}
  for is_test in (False, True):
    group = [d for d in documents if is_test_module(d[0]) == is_test]
    order = np.random.default_rng([seed, is_test]).permutation(len(group))
    n_train, n_val = round(0.6 * len(group)), round(0.2 * len(group))
    for rank, i in enumerate(order):
      split = 'train' if rank < n_train else 'validation' if rank < n_train + n_val else 'test'
      splits[split].append(group[i])
  return {s: sorted(docs) for s, docs in splits.items()}


def build_stdlib_task(
  name: str,
  seed: int = 0,
  max_per_document: int = 100,
  documents: list[sources.Document] | None = None,
) -> Task:
  """The built-in task `name` (STDLIB_TASKS), a pure function of the seed and the documents
  (by default held_out_documents())."""
  if name not in STDLIB_TASKS:
    raise UserError(f'unknown built-in task {name!r}; use one of {", ".join(STDLIB_TASKS)}')
  documents = held_out_documents() if documents is None else documents
  by_split = split_by_document(documents, seed)
  # The stdlib_rename_* tasks share one random stream: the same examples in the same order with
  # the same choices, only the label differs (see _rename).
  stream = 'stdlib_rename' if name.startswith(_RENAME_PREFIX) else name
  splits = {}
  for i, (split, docs) in enumerate(by_split.items()):
    # A seed per (task, split), so the splits do not depend on each other's sizes.
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode()), SPLITS.index(split)])
    if name.startswith(_RENAME_PREFIX):
      earlier = [d for s in SPLITS[:i] for d in by_split[s]]
      splits[split] = _rename(
        docs, rng, max_per_document, name.removeprefix(_RENAME_PREFIX), earlier
      )
      continue
    builder = {
      'stdlib_next_line': _next_line,
      'stdlib_same_file': _same_file,
      'stdlib_test_or_lib': _test_or_lib,
      'stdlib_cloze': _cloze,
      'stdlib_brackets': _brackets,
    }[name]
    splits[split] = builder(docs, rng, max_per_document)
  num_labels = 2 if STDLIB_TASKS[name] in ('similarity', 'classification') else 0
  return Task(name, STDLIB_TASKS[name], splits, num_labels)


def _usable_line(line: str) -> bool:
  return 10 <= len(line.strip()) and len(line) <= _MAX_LINE_CHARS


def _context(lines: list[str]) -> str:
  """The lines joined, each with its newline, dropping lines from the front to stay short."""
  while len(lines) > 1 and sum(len(line) + 1 for line in lines) > _MAX_CONTEXT_CHARS:
    lines = lines[1:]
  return ''.join(line + '\n' for line in lines)


def _sample(items: list, k: int, rng: np.random.Generator) -> list:
  return [items[i] for i in sorted(rng.permutation(len(items))[:k])]


def _next_line(
  docs: list[sources.Document], rng: np.random.Generator, max_per_doc: int
) -> list[dict]:
  lines_of = {name: text.splitlines() for name, text in docs}
  pool = {
    name: [line.strip() for line in lines if _usable_line(line)] for name, lines in lines_of.items()
  }
  examples = []
  for name, lines in lines_of.items():
    others = [line for other, ls in pool.items() if other != name for line in ls]
    positions = [
      i
      for i in range(_NEXT_LINE_CONTEXT, len(lines))
      if _usable_line(lines[i])
      and any(line.strip() for line in lines[i - _NEXT_LINE_CONTEXT : i])
      and len(lines[i - 1]) <= _MAX_CONTEXT_CHARS
    ]
    for i in _sample(positions, max_per_doc, rng):
      answer = lines[i]
      indent = answer[: len(answer) - len(answer.lstrip())]
      distractors, seen = [], {answer.strip()}
      for j in rng.permutation(len(others)):
        if others[j] not in seen:
          seen.add(others[j])
          distractors.append(indent + others[j])
        if len(distractors) == 3:
          break
      if len(distractors) < 3:
        continue
      choices = [answer, *distractors]
      order = rng.permutation(4)
      examples.append(
        {
          'context': _context(lines[i - _NEXT_LINE_CONTEXT : i]),
          'choices': [choices[k] for k in order],
          'label': int(np.argmax(order == 0)),
          'source': name,
        }
      )
  return examples


def _snippets(text: str, n_lines: int, min_nonblank: int) -> list[str]:
  """Non-overlapping runs of n_lines lines with enough code in them, short enough to fit."""
  lines = text.splitlines()
  snippets = []
  for start in range(0, len(lines) - n_lines + 1, n_lines):
    chunk = lines[start : start + n_lines]
    snippet = '\n'.join(chunk)
    if (
      sum(bool(line.strip()) for line in chunk) >= min_nonblank
      and len(snippet) <= _MAX_SNIPPET_CHARS
    ):
      snippets.append(snippet)
  return snippets


def _same_file(
  docs: list[sources.Document], rng: np.random.Generator, max_per_doc: int
) -> list[dict]:
  snippets = {name: _snippets(text, _PAIR_SNIPPET_LINES, 3) for name, text in docs}
  names = [name for name, s in snippets.items() if len(s) >= 2]
  examples = []
  for name in names:
    for _ in range(max_per_doc // 2):
      i, j = rng.choice(len(snippets[name]), 2, replace=False)
      examples.append({'a': snippets[name][i], 'b': snippets[name][j], 'label': 1, 'source': name})
      other = names[(names.index(name) + 1 + rng.integers(len(names) - 1)) % len(names)]
      a, b = snippets[name][i], snippets[other][rng.integers(len(snippets[other]))]
      a, b = (a, b) if rng.random() < 0.5 else (b, a)
      examples.append({'a': a, 'b': b, 'label': 0, 'source': f'{name} | {other}'})
  return [examples[i] for i in rng.permutation(len(examples))]


def _test_or_lib(
  docs: list[sources.Document], rng: np.random.Generator, max_per_doc: int
) -> list[dict]:
  by_label = {0: [], 1: []}
  for name, text in docs:
    label = int(is_test_module(name))
    by_label[label] += [
      {'text': s, 'label': label, 'source': name}
      for s in _sample(_snippets(text, _CLASSIFY_SNIPPET_LINES, 4), max_per_doc, rng)
    ]
  n = min(len(by_label[0]), len(by_label[1]))  # balanced: chance is 50 %
  examples = _sample(by_label[0], n, rng) + _sample(by_label[1], n, rng)
  return [examples[i] for i in rng.permutation(len(examples))]


def _cloze(docs: list[sources.Document], rng: np.random.Generator, max_per_doc: int) -> list[dict]:
  examples = []
  for name, text in docs:
    lines = text.splitlines()
    candidates = []
    for row, col, target in _last_identifiers(text):
      line = lines[row]
      if (
        len(line) > _MAX_LINE_CHARS
        or not line[:col].strip()
        or len(target) < 3
        or keyword.iskeyword(target)
        or keyword.issoftkeyword(target)
      ):
        continue
      context = _context(lines[max(0, row - _CLOZE_CONTEXT) : row]) + line[:col]
      if re.search(rf'\b{target}\b', context):
        candidates.append({'context': context, 'target': target, 'source': name})
    examples += _sample(candidates, max_per_doc, rng)
  return examples


def bracket_cuts(text: str) -> list[tuple[int, str, str]]:
  """(line index, context, answer) for each run of adjacent closing brackets in the code: the
  context is the line up to the run, the answer the run, the innermost brackets still open closed
  innermost first ('    x = f(a[i' and '])' in '    x = f(a[i]) + 1', '    y = g(b' and ')' in
  '    y = g(b) + h(c)'). Python's tokenizer finds the brackets, so none in strings or comments
  count. Only statements on one line (every bracket closed on the line it opens on), runs of at
  most _MAX_BRACKET_RUN brackets after something (not the ')' of 'f()'), and contexts of at most
  _MAX_BRACKET_CONTEXT_BYTES bytes (UTF-8) with code in them. A file that does not tokenize (a few
  tests hold deliberately broken code) gives none."""
  cuts, statement = [], []
  try:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
      if token.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
        continue
      if token.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
        statement.append(token)
        continue
      tokens, statement = statement, []
      row = tokens[0].start[0] if tokens else 0
      if tokens and all(t.start[0] == t.end[0] == row for t in tokens):
        cuts += _bracket_cuts_on_line(tokens)
  except (tokenize.TokenError, SyntaxError):
    return []
  return cuts


def _bracket_cuts_on_line(tokens: list[tokenize.TokenInfo]) -> list[tuple[int, str, str]]:
  """bracket_cuts of one statement, all its tokens on one line."""
  line = tokens[0].line.rstrip('\r\n')
  brackets, in_fstring = [], 0
  for token in tokens:
    # Python 3.12 tokenizes f-strings, their braces too; those are string, not code, as before.
    in_fstring += (token.type == _FSTRING_START) - (token.type == _FSTRING_END)
    if not in_fstring and token.type == tokenize.OP and token.string in _OPENERS + _CLOSERS:
      brackets.append(token)
  cuts = []
  for i, token in enumerate(brackets):
    previous = brackets[i - 1] if i else None
    if token.string in _OPENERS or (
      previous is not None and previous.string in _CLOSERS and previous.end == token.start
    ):
      continue  # not the first closer of a run
    run = 1
    while (
      i + run < len(brackets)
      and brackets[i + run].string in _CLOSERS
      and brackets[i + run].start == brackets[i + run - 1].end
    ):
      run += 1
    col = token.start[1]
    context = line[:col]
    if (
      run <= _MAX_BRACKET_RUN
      and context.strip()
      and context[-1] not in _OPENERS
      and len(context.encode('utf-8')) <= _MAX_BRACKET_CONTEXT_BYTES
    ):
      cuts.append((token.start[0] - 1, context, line[col : col + run]))
  return cuts


def _brackets(
  docs: list[sources.Document], rng: np.random.Generator, max_per_doc: int
) -> list[dict]:
  """stdlib_brackets: the start of a line of code that leaves brackets open as context
  ('    x = f(a[i'); the choices are the closing brackets that really follow there ('])') and
  _BRACKET_CHOICES - 1 other strings of as many closing brackets, drawn at random (')]', '}]'),
  in a random order. Nothing but the brackets still open, their kinds and their nesting, tells
  the choices apart: this tests the stack a parser keeps. Chance is 1/_BRACKET_CHOICES = 1/3
  (a single closer has exactly three choices: ')', ']' and '}').

  Balanced: in the held-out code four runs in five or more are ')' alone or '))', which a model
  gets right without reading the context, so half the examples of each split close with ')' only
  and half with at least one other bracket; a model that always closes with ')' scores about 1/2.
  Each document gives at most max_per_doc // 2 (at least 1) of each half; see bracket_cuts for
  the places used."""
  halves = {True: [], False: []}  # does the answer close with ')' only?
  for name, text in docs:
    cuts = bracket_cuts(text)
    for only_parens, half in halves.items():
      found = [c for c in cuts if (set(c[2]) == {')'}) == only_parens]
      half += [(name, *c) for c in _sample(found, max(1, max_per_doc // 2), rng)]
  n = min(len(half) for half in halves.values())
  examples = []
  for name, _, context, answer in sorted(
    s for half in halves.values() for s in _sample(half, n, rng)
  ):
    others = [s for s in _closing_sequences(len(answer)) if s != answer]
    picked = rng.choice(len(others), _BRACKET_CHOICES - 1, replace=False)
    choices = [answer, *(others[k] for k in sorted(picked))]
    order = rng.permutation(len(choices))
    examples.append(
      {
        'context': context,
        'choices': [choices[k] for k in order],
        'label': int(np.argmax(order == 0)),
        'source': name,
      }
    )
  return examples


def _closing_sequences(length: int) -> list[str]:
  """Every string of `length` closing brackets, in a fixed order."""
  sequences = ['']
  for _ in range(length):
    sequences = [s + c for s in sequences for c in _CLOSERS]
  return sequences


def rename(identifier: str, transform: str) -> str:
  """The RENAME_TRANSFORMS[transform] renaming of a snake_case identifier:
  rename('get_default_value', 'initials') == 'gdv'."""
  return RENAME_TRANSFORMS[transform](identifier.split('_'))


def _snake_case_identifiers(text: str) -> list[str]:
  """The distinct snake_case names of the code (2+ words of lowercase letters and digits, each
  starting with a letter, at most _MAX_RENAME_CHARS long), in order of first use; Python's
  tokenizer finds them, so names in strings and comments never count. A file that does not
  tokenize gives none."""
  names = {}
  try:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
      if (
        token.type == tokenize.NAME
        and len(token.string) <= _MAX_RENAME_CHARS
        and _SNAKE_CASE.fullmatch(token.string)
      ):
        names.setdefault(token.string, None)
  except (tokenize.TokenError, SyntaxError):
    return []
  return list(names)


def _rename(
  docs: list[sources.Document],
  rng: np.random.Generator,
  max_per_doc: int,
  transform: str,
  earlier: list[sources.Document],
) -> list[dict]:
  """stdlib_rename_<transform>: 'get_default_value ->' with the choices ' gdv',
  ' GetDefaultValue', ' value_default_get' and ' GET_DEFAULT_VALUE' (in a random order), the
  answer the one RENAME_TRANSFORMS[transform] gives.

  Why it tests few-shot learning: the context is the identifier alone and every choice is a
  faithful renaming of it, so nothing in the context says which renaming is asked for; the
  demonstrations do (each is an identifier with its renaming). Zero-shot, a model can only follow
  its prior over the four formats. The four tasks hold the same examples with the same choices in
  the same order (one random stream), only the label differs, so a zero-shot prompt is the same
  text in all four: a model picks the same choice in each, right in exactly one, and its zero-shot
  accuracies over the four tasks average exactly 1/4, chance, whatever its prior (for the summed
  and the length-normalised scores alike). Above that average, k-shot accuracy measures what the
  model read from k demonstrations. Chance is 1/4 on each task (4 choices).

  Each identifier is an example once: in the first document of the first split (train, then
  validation, then test) whose code uses it; names used in `earlier` splits' documents are
  skipped, so no test answer is ever a demonstration's.
  """
  seen = {n for _, text in earlier for n in _snake_case_identifiers(text)}
  answer_index = list(RENAME_TRANSFORMS).index(transform)
  examples = []
  for name, text in docs:
    candidates = []
    for identifier in _snake_case_identifiers(text):
      if identifier in seen:
        continue
      seen.add(identifier)
      renamed = [rename(identifier, t) for t in RENAME_TRANSFORMS]
      # Four different answers, none the identifier itself (reversing 'a_a', say).
      if len(set(renamed)) == len(renamed) and identifier not in renamed:
        candidates.append((identifier, renamed))
    for identifier, renamed in _sample(candidates, max_per_doc, rng):
      order = rng.permutation(len(renamed))
      examples.append(
        {
          'context': f'{identifier} ->',
          'choices': [' ' + renamed[k] for k in order],
          'label': int(np.argmax(order == answer_index)),
          'source': name,
        }
      )
  return examples


def _last_identifiers(text: str) -> list[tuple[int, int, str]]:
  """(line index, column, name) of the last identifier on each line of code, found with Python's
  own tokenizer, so names inside strings and comments never count. A file that does not tokenize
  (a few tests hold deliberately broken code) gives none."""
  last = {}
  try:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
      if token.type == tokenize.NAME:
        last[token.start[0] - 1] = (token.start[0] - 1, token.start[1], token.string)
  except (tokenize.TokenError, SyntaxError):
    return []
  return sorted(last.values())


def write_jsonl(task: Task, out: str) -> dict[str, int]:
  """Writes DIR/<split>.jsonl for each split of the task; returns the examples per split."""
  os.makedirs(out, exist_ok=True)
  for split, examples in task.splits.items():
    cache.write_atomic(
      os.path.join(out, f'{split}.jsonl'),
      ''.join(json.dumps(e, ensure_ascii=False) + '\n' for e in examples),
    )
  return {split: len(examples) for split, examples in task.splits.items()}
