"""Task files and the built-in tasks made from the held-out standard library."""

import json
import os
import subprocess
import sys

import pytest

from gptjax.configs import default
from gptjax.data import sources
from gptjax.downstream import tasks
from gptjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def held_out():
  return tasks.held_out_documents()


@pytest.fixture(scope='module')
def built(held_out):
  return {name: tasks.build_stdlib_task(name, 0, 20, held_out) for name in tasks.STDLIB_TASKS}


def test_built_in_tasks_use_only_documents_pre_training_holds_out(held_out, built):
  train_names = {name for name, _ in sources.split_documents(default.get_config().data)[0]}
  assert {name for name, _ in held_out}.isdisjoint(train_names)
  by_split = tasks.split_by_document(held_out, 0)
  assert sorted(d for docs in by_split.values() for d in docs) == sorted(held_out)
  for name, task in built.items():
    assert set(task.splits) == set(tasks.SPLITS)
    for split, examples in task.splits.items():
      assert examples, (name, split)
      allowed = {n for n, _ in by_split[split]}
      for example in examples:
        tasks.check_example(example, task.kind, name)
        assert set(example['source'].split(' | ')) <= allowed


def test_editing_the_default_config_does_not_change_the_benchmark(held_out, monkeypatch):
  def edited():
    config = default.get_config()
    config.data.update(val_fraction=0.5, max_documents=100)
    return config

  monkeypatch.setattr(default, 'get_config', edited)
  assert tasks.held_out_documents() == held_out
  assert held_out == sources.split_documents(tasks.STDLIB_DATA)[1]
  assert dict(tasks.STDLIB_DATA) == {'source': 'stdlib', 'max_documents': 0, 'val_fraction': 0.02}


def test_built_in_tasks_are_deterministic_given_the_seed(held_out, built):
  again = tasks.build_stdlib_task('stdlib_next_line', 0, 20, held_out)
  assert again == built['stdlib_next_line']
  assert tasks.build_stdlib_task('stdlib_next_line', 1, 20, held_out) != again


def test_built_in_answers_come_from_their_documents(held_out, built):
  text = dict(held_out)
  for example in built['stdlib_next_line'].split('test'):
    assert len(example['choices']) == 4 and len({c.strip() for c in example['choices']}) == 4
    answer = example['choices'][example['label']]
    assert example['context'] + answer + '\n' in text[example['source']] + '\n'
    indents = {c[: len(c) - len(c.lstrip())] for c in example['choices']}
    assert len(indents) == 1  # the distractors are indented like the answer
  for example in built['stdlib_cloze'].split('test'):
    assert (example['context'] + example['target']) in text[example['source']]
    assert example['target'].isidentifier()
    assert example['target'] in example['context']
  for example in built['stdlib_same_file'].split('test'):
    sources = example['source'].split(' | ')
    assert example['label'] == (len(sources) == 1)
    assert example['a'] in text[sources[0]] or example['a'] in text[sources[-1]]
  classified = built['stdlib_test_or_lib'].split('train')
  assert sum(e['label'] for e in classified) * 2 == len(classified)  # balanced
  for example in classified:
    assert example['label'] == tasks.is_test_module(example['source'])
    assert example['text'] in text[example['source']]


BRACKETS_SOURCE = """\
def f(a, b):
    x = f(a[i]) + g(b)  # (not [this
    s = "(" + str(len(x))
    y = {'k': [1, 2]}
    return h()
z = (1,
     2)
w = f'{x[0]}' + q(r)
"""


def test_bracket_cuts_on_hand_checked_code():
  # Runs of closers after something, the context the line up to the run; none in strings,
  # comments or f-strings, none after an empty 'h(', none in a statement over several lines.
  assert tasks.bracket_cuts(BRACKETS_SOURCE) == [
    (0, 'def f(a, b', ')'),
    (1, '    x = f(a[i', '])'),
    (1, '    x = f(a[i]) + g(b', ')'),
    (2, '    s = "(" + str(len(x', '))'),
    (3, "    y = {'k': [1, 2", ']}'),
    (7, "w = f'{x[0]}' + q(r", ')'),
  ]
  assert tasks.bracket_cuts('x = (1,\n') == []  # does not tokenize
  long = 'x = f(' + 'a' * 60 + ')\n'
  assert tasks.bracket_cuts(long) == []  # the context would be over 60 bytes


def test_the_brackets_task_on_hand_checked_code():
  task = tasks.build_stdlib_task('stdlib_brackets', 0, 20, [('m.py', BRACKETS_SOURCE)])
  examples = task.split('train')  # one document: it goes to train
  assert task.kind == 'multiple_choice' and not task.split('test')
  # Balanced: two cuts close with something besides ')' only, so two of the four do not.
  answers = sorted((e['context'], e['choices'][e['label']]) for e in examples)
  assert len(answers) == 4
  assert {('    x = f(a[i', '])'), ("    y = {'k': [1, 2", ']}')} < set(answers)
  assert sum(set(a) == {')'} for _, a in answers) == 2
  (example,) = [e for e in examples if e['context'] == "    y = {'k': [1, 2"]
  assert len(example['choices']) == 3 and ']}' in example['choices']


def test_the_brackets_task(held_out, built):
  task = built['stdlib_brackets']
  text = dict(held_out)
  assert tasks.build_stdlib_task('stdlib_brackets', 0, 20, held_out) == task  # deterministic
  assert tasks.build_stdlib_task('stdlib_brackets', 1, 20, held_out) != task
  for examples in task.splits.values():
    answers = [e['choices'][e['label']] for e in examples]
    assert sum(set(a) == {')'} for a in answers) * 2 == len(examples)  # balanced
    for example, answer in zip(examples, answers):
      choices = example['choices']
      # The answer among three distinct strings of as many closing brackets: chance is 1/3.
      assert len(choices) == 3 and len(set(choices)) == 3
      assert all(len(c) == len(answer) and set(c) <= set(')]}') for c in choices)
      # The context is the start of a line of the document and the answer follows it there.
      assert '\n' not in example['context'] and len(example['context'].encode()) <= 60
      assert ('\n' + example['context'] + answer) in '\n' + text[example['source']]
  # Every split from its own documents, so no test example shares a file with a train one.
  by_split = {s: {e['source'] for e in examples} for s, examples in task.splits.items()}
  assert by_split['train'].isdisjoint(by_split['validation'] | by_split['test'])
  assert by_split['validation'].isdisjoint(by_split['test'])


RENAME_TASKS = [name for name in tasks.STDLIB_TASKS if name.startswith('stdlib_rename_')]


def test_the_renamings_on_a_hand_checked_identifier():
  assert {t: tasks.rename('get_default_value', t) for t in tasks.RENAME_TRANSFORMS} == {
    'initials': 'gdv',
    'camel': 'GetDefaultValue',
    'reversed': 'value_default_get',
    'upper': 'GET_DEFAULT_VALUE',
  }
  assert tasks.rename('utf8_to_str', 'camel') == 'Utf8ToStr'
  assert RENAME_TASKS == [f'stdlib_rename_{t}' for t in tasks.RENAME_TRANSFORMS]


def test_rename_tasks_ask_for_one_renaming_among_all_four(held_out, built):
  for name in RENAME_TASKS:
    transform = name.removeprefix('stdlib_rename_')
    task = built[name]
    assert task.kind == 'multiple_choice'
    assert tasks.build_stdlib_task(name, 0, 20, held_out) == task  # deterministic
    assert tasks.build_stdlib_task(name, 1, 20, held_out) != task
    for examples in task.splits.values():
      for example in examples:
        identifier = example['context'].removesuffix(' ->')
        assert example['context'] == identifier + ' ->' and '_' in identifier
        assert len(identifier) <= 20 and identifier in dict(held_out)[example['source']]
        # Every renaming once, the answer the task's: chance is 1/4.
        assert sorted(example['choices']) == sorted(
          ' ' + tasks.rename(identifier, t) for t in tasks.RENAME_TRANSFORMS
        )
        assert example['choices'][example['label']] == ' ' + tasks.rename(identifier, transform)
    # An identifier is an example in one split only, so no demonstration gives a test answer.
    contexts = {s: {e['context'] for e in examples} for s, examples in task.splits.items()}
    assert all(len(contexts[s]) == len(task.splits[s]) for s in tasks.SPLITS)
    assert contexts['train'].isdisjoint(contexts['validation'] | contexts['test'])
    assert contexts['validation'].isdisjoint(contexts['test'])


def test_the_rename_tasks_share_their_examples_so_zero_shot_averages_to_chance(built):
  # Same contexts and choices in the same order, the labels a permutation of the four choices:
  # any model's zero-shot pick is right in exactly one of the four tasks.
  for split in tasks.SPLITS:
    variants = [built[name].split(split) for name in RENAME_TASKS]
    for examples in zip(*variants, strict=True):
      assert len({(e['context'], tuple(e['choices'])) for e in examples}) == 1
      assert sorted(e['label'] for e in examples) == [0, 1, 2, 3]


def test_jsonl_files_round_trip(built, tmp_path):
  counts = tasks.write_jsonl(built['stdlib_same_file'], str(tmp_path / 'same'))
  loaded = tasks.load_task(str(tmp_path / 'same'))
  assert loaded.kind == 'similarity' and loaded.num_labels == 2
  assert loaded.splits == built['stdlib_same_file'].splits
  assert counts == {s: len(e) for s, e in loaded.splits.items()}
  pairs = tasks.load_task(
    f'train={tmp_path}/same/train.jsonl,validation={tmp_path}/same/test.jsonl'
  )
  assert set(pairs.splits) == {'train', 'validation'}


@pytest.mark.parametrize(
  'lines, message',
  [
    (['{"text": "a", "label": 0}', '{"text": "b", "label": '], ':2: not valid JSON'),
    (['[1, 2]'], ':1: expected a JSON object'),
    (['{"premise": "a", "label": 0}'], "missing field 'hypothesis' \\(entailment examples have"),
    (['{"text": "a"}'], ":1: missing field 'label' \\(classification examples have"),
    (['{"prompt": "a", "answer": 1}'], 'match no task kind'),
    (['{"text": "a", "label": 0}', '{"text": "b"}'], ":2: missing field 'label'"),
    (['{"text": "a", "label": "1"}'], "field 'label' must be int"),
    (['{"text": "a", "label": -1}'], 'label -1 is negative'),
    (['{"context": "a", "choices": ["b"], "label": 0}'], '2 or more non-empty strings'),
    (['{"context": "a", "choices": ["b", "c"], "label": 2}'], 'label 2 is outside 0..1'),
    (['{"context": "a", "target": ""}'], '"target" is empty'),
    ([], 'holds no examples'),
  ],
)
def test_malformed_files_name_the_line_and_the_problem(tmp_path, lines, message):
  path = tmp_path / 'task.jsonl'
  path.write_text(''.join(line + '\n' for line in lines))
  with pytest.raises(UserError, match=message):
    tasks.load_task(str(path))


def test_a_task_file_that_is_not_utf8_names_the_line_and_column(tmp_path):
  path = tmp_path / 'task.jsonl'
  path.write_bytes(b'{"text": "a", "label": 0}\n{"text": "\xff\xfeb", "label": 1}\n')
  with pytest.raises(UserError, match=r'task.jsonl:2: not UTF-8 text \(byte 0xff at column 11\)'):
    tasks.load_task(str(path))


def test_labels_outside_the_declared_classes_are_refused(tmp_path):
  for split, label in (('train', 1), ('validation', 2)):
    (tmp_path / f'{split}.jsonl').write_text(json.dumps({'text': 'x', 'label': label}) + '\n')
  with pytest.raises(UserError, match='validation.jsonl: example 1 has label 2, outside the 2'):
    tasks.load_task(str(tmp_path))
  assert tasks.load_task(str(tmp_path), num_labels=3).num_labels == 3


@pytest.mark.parametrize(
  'spec, message',
  [
    ('no_such_task', 'unknown task'),
    ('{tmp}/missing.jsonl', 'does not exist'),
    ('{tmp}', 'holds none of train.jsonl'),
    ('dev={tmp}/a.jsonl', "'dev' is not a split"),
    ('tfds:glue/cola', 'not supported'),
    ('glue/sst2', 'TFDS dataset glue/sst2 is not prepared in {tmp}'),
  ],
)
def test_unknown_or_missing_tasks_are_refused(tmp_path, spec, message):
  with pytest.raises(UserError, match=message.format(tmp=tmp_path)):
    tasks.load_task(spec.format(tmp=tmp_path), tfds_data_dir=str(tmp_path))


def _build(out, tasks: str, *args: str) -> subprocess.CompletedProcess:
  command = [sys.executable, '-m', 'gptjax.tasks', 'build', '--out', str(out), '--tasks', tasks]
  return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
def test_the_builder_command_line(tmp_path):
  result = _build(tmp_path, 'stdlib_cloze,nope')
  assert result.returncode == 1
  assert result.stderr == (
    "error: unknown built-in task 'nope'; use stdlib_next_line, "
    'stdlib_same_file, stdlib_test_or_lib, stdlib_cloze, stdlib_brackets, '
    'stdlib_rename_initials, stdlib_rename_camel, stdlib_rename_reversed, stdlib_rename_upper\n'
  )
  assert not os.listdir(tmp_path)
  result = _build(tmp_path, 'stdlib_cloze', '--max_per_document', '5')
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path / 'stdlib_cloze')) == [
    'test.jsonl',
    'train.jsonl',
    'validation.jsonl',
  ]
