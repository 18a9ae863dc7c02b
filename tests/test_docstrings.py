"""The standard library's function -> docstring pairs."""

import textwrap

import pytest

from gptjax.data import docstrings

MODULE = textwrap.dedent('''\
    """A module docstring is not a pair."""
    import functools


    def add(a, b):
        """Add two numbers together.

        More text that is not part of the target.
        """
        return a + b


    def no_docstring(x):
        return x


    def only_docstring():
        """Nothing else in this body at all."""


    def short(x):
        """Too short."""
        return x


    def inline(x): "Shares its line with the def."; return x


    class Stack:
        """Classes are not functions."""

        @functools.cache
        def peek(self, depth: int = 0):
            \'\'\'Return the item at the given
            depth, counting from the top. Raises IndexError when too deep.\'\'\'
            if depth:  # a comment stays
                return self.items[-1 - depth]
            return self.items[-1]

        async def pop(self):
            "Remove and return the top item"

            def helper():
                """Nested functions count too."""
                return 1
            return self.items.pop()
    ''')


def test_docstring_pairs_remove_the_docstring_and_keep_the_first_sentence():
  assert docstrings.docstring_pairs(MODULE) == [
    ('def add(a, b):\n    return a + b', 'Add two numbers together.'),
    (
      '@functools.cache\ndef peek(self, depth: int = 0):\n    if depth:  # a comment stays\n'
      '        return self.items[-1 - depth]\n    return self.items[-1]',
      'Return the item at the given depth, counting from the top.',
    ),
    (
      'async def pop(self):\n\n    def helper():\n        """Nested functions count too."""\n'
      '        return 1\n    return self.items.pop()',
      'Remove and return the top item',
    ),
    ('def helper():\n    return 1', 'Nested functions count too.'),
  ]
  assert docstrings.docstring_pairs('def broken(:\n  """Syntax errors give no pairs."""\n') == []


@pytest.mark.parametrize(
  'docstring, sentence',
  [
    ('Return the thing.', 'Return the thing.'),
    ('Return the\n   thing. And more.', 'Return the thing.'),
    ('Return x.\nThen y.', 'Return x.'),
    ('No final period\n\nSecond paragraph.', 'No final period'),
    ('  Leading space, version 3.11 stays.  ', 'Leading space, version 3.11 stays.'),
  ],
)
def test_first_sentence(docstring, sentence):
  assert docstrings.first_sentence(docstring) == sentence


def test_validation_modules_contribute_no_training_pairs():
  modules = [
    (f'pkg/mod_{m}.py', [(f'code {m}.{i}', f'doc {m}') for i in range(3)]) for m in range(50)
  ]
  modules.append(('empty.py', []))  # modules without pairs are not counted
  train, val = docstrings.split_by_module(modules, val_fraction=0.1)
  val_modules = {target for _, target in val}
  assert len(val_modules) == 5 and len(val) == 15 and len(train) == 135
  assert not val_modules & {target for _, target in train}
  assert docstrings.split_by_module(modules, val_fraction=0.1) == (train, val)


def test_each_pair_is_kept_once_and_never_on_both_sides():
  p, q = ('code p', 'doc p'), ('code q', 'doc q')
  train, val = docstrings.split_by_module([('a.py', [p, p, q]), ('b.py', [p])], val_fraction=0.5)
  assert sorted(train + val) == [p, q] and train
