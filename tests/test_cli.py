"""gptjax/cli.py: how a command ends on bad input. A config file whose code fails (or that gives no
config) is one line naming the file, the exception and the line of the file at fault; an error
line is never glued to a progress bar; a path the filesystem refuses is one line naming it."""

import errno
import os
import subprocess
import sys

import pytest
import tqdm

from gptjax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (the config file's text, what its one line says)
CONFIG_FILES = {
  'raises': (
    'def get_config():\n  x = 1\n  raise ValueError("no such learning rate")\n',
    ['get_config() in the config file', 'raised ValueError: no such learning rate', 'line 3'],
  ),
  'no_get_config': ('CONFIG = {}\n', ['has no get_config() function']),
  'syntax': ('def get_config(:\n  pass\n', ['raised SyntaxError: invalid syntax', 'line 1']),
  'import': (
    'import not_a_module_anywhere\n',
    ["No module named 'not_a_module_anywhere'", 'line 1'],
  ),
  'returns_none': ('def get_config():\n  pass\n', ['returned NoneType, not an ml_collections']),
  'raises_below': (
    'import json\n\n\ndef get_config():\n  return json.loads("{")\n',
    ['raised JSONDecodeError', 'line 5, in get_config', 'raised in'],
  ),
}


@pytest.mark.parametrize('case', sorted(CONFIG_FILES))
def test_a_config_file_that_gives_no_config_is_named_with_its_line(case, tmp_path):
  text, fragments = CONFIG_FILES[case]
  path = tmp_path / f'{case}.py'
  path.write_text(text)
  problem = cli._config_file_problem(str(path))
  assert problem is not None and str(path) in problem, problem
  for fragment in fragments:
    assert fragment in problem, problem
  assert 'config_config' not in problem and 'Traceback' not in problem and '\n' not in problem


def test_a_config_file_that_gives_a_config_has_no_problem(tmp_path):
  path = tmp_path / 'good.py'
  path.write_text(
    'import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict()\n'
  )
  assert cli._config_file_problem(str(path)) is None


def _main(*args):
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.main', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_the_command_line_reports_a_failing_config_file_in_one_line(tmp_path):
  for case in ('raises', 'no_get_config'):
    text, fragments = CONFIG_FILES[case]
    path = tmp_path / f'{case}.py'
    path.write_text(text)
    result = _main('--config', str(path), f'--workdir={tmp_path / "run"}')
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and str(path) in errors[0], result.stderr
    assert 'Traceback' not in result.stderr and 'config_config' not in result.stderr
    assert 'unknown config field' not in result.stderr
  assert not (tmp_path / 'run').exists()


def test_an_error_line_ends_the_open_progress_bars_first(capsys):
  bar = tqdm.tqdm(total=10, desc='train')
  bar.update(3)
  with pytest.raises(SystemExit):
    cli.fail('something went wrong')
  err = capsys.readouterr().err
  assert '\nerror: something went wrong\n' in err, repr(err)
  assert bar.disable or bar.n == 3  # closed, and not drawn again after the line
  assert err.endswith('error: something went wrong\n')


@pytest.mark.parametrize(
  'code,advice',
  [
    (errno.ENOSPC, 'free space'),
    (errno.EFBIG, 'ulimit -f'),
    (errno.EACCES, 'writable'),
    (errno.EROFS, 'writable'),
    (errno.ENOTDIR, 'a file stands where a directory is needed'),
  ],
)
def test_a_filesystem_error_is_one_line_naming_the_path(code, advice):
  message = cli.filesystem_error(OSError(code, os.strerror(code), '/runs/a/config.json'))
  assert message.startswith(f'/runs/a/config.json: {os.strerror(code)}; ') and advice in message


def test_a_bad_escape_in_separator_is_one_line_before_anything_is_read(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'gptjax.evaluate',
      f'--workdir={tmp_path / "none"}',
      '--task=none.jsonl',
      '--separator=\\x',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines() == [
    "error: --separator='\\x': truncated \\xXX escape at character 1; write a backslash as \\\\ "
    "(--separator='\\n\\n' is a blank line)"
  ]


@pytest.mark.parametrize(
  'args', [['gptjax.main', '--config=tiny', '--workdir={w}', 'extra'], ['gptjax.bench', 'extra']]
)
def test_an_extra_positional_argument_is_one_error_line(args, tmp_path):
  result = subprocess.run(
    [sys.executable, '-m', *(a.format(w=tmp_path / 'w') for a in args)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.splitlines() == [
    'error: expected no positional arguments, got extra (see --help)'
  ]
  assert not (tmp_path / 'w').exists()
