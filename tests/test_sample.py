"""The sampling command: python -m gptjax.sample --workdir ... --prompt ..."""

import os
import subprocess
import sys

import jax
import pytest
from conftest import write_corpus

from gptjax.configs import tiny
from gptjax.decoding import sampling
from gptjax.training import trainer
from gptjax.training.state import load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A run of gptjax/configs/tiny.py (n_ctx 64, byte tokenizer) trained for a few steps."""
  base = tmp_path_factory.mktemp('sample')
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.source, config.data.text_files = 'text_files', write_corpus(base / 'corpus')
  config.train.update(steps=4, warmup_steps=1)
  trainer.train_and_evaluate(config, str(base / 'run'), show_progress=False)
  return str(base / 'run')


def _sample(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.sample', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_samples_are_reproducible_and_match_the_library(workdir, tmp_path):
  prompt_file = tmp_path / 'prompt.txt'
  prompt_file.write_text('def function_1(value):\n')
  args = [
    '--workdir',
    workdir,
    '--prompt_file',
    str(prompt_file),
    '--num_samples',
    '2',
    '--max_new_tokens',
    '30',
    '--temperature',
    '1',
    '--top_k',
    '20',
    '--top_p',
    '0.9',
    '--seed',
    '5',
  ]
  first, second = _sample(*args), _sample(*args)
  assert first.returncode == 0, first.stderr
  assert first.stdout == second.stdout
  tokenizer, model, params = load_run(workdir)
  texts = sampling.sample_texts(
    model,
    params,
    tokenizer,
    'def function_1(value):\n',
    2,
    30,
    jax.random.PRNGKey(5),
    temperature=1.0,
    top_k=20,
    top_p=0.9,
  )
  assert first.stdout == ''.join(
    f'--- sample {i + 1} ---\n{text}\n' for i, text in enumerate(texts)
  )
  assert texts[0] != texts[1]


@pytest.mark.slow
@pytest.mark.parametrize(
  'args, message',
  [
    (['--workdir', '{empty}', '--prompt', 'x'], 'no config.json'),
    (['--workdir', '{run}', '--prompt', ''], 'prompt is empty'),
    (['--workdir', '{run}', '--prompt', 'x' * 64], 'context holds 64'),
    (['--workdir', '{run}', '--prompt', 'x', '--top_k', '-1'], 'top_k'),
    (['--workdir', '{run}', '--prompt', 'x', '--prompt_file', 'p.txt'], 'one of --prompt'),
    (['--workdir', '{run}', '--prompt', 'x', '--no_such_flag'], 'no_such_flag'),
    (['--workdir', '{run}', '--prompt', 'x', '--temperature', 'nan'], 'must be a finite number'),
  ],
)
def test_bad_input_is_one_error_line(workdir, tmp_path, args, message):
  result = _sample(*(a.format(empty=tmp_path, run=workdir) for a in args))
  assert result.returncode != 0
  assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, result.stderr
  assert message in result.stderr


@pytest.mark.slow
def test_a_run_without_checkpoints_is_one_error_line(workdir, tmp_path):
  with open(os.path.join(workdir, 'config.json')) as f:
    (tmp_path / 'config.json').write_text(f.read())
  result = _sample('--workdir', str(tmp_path), '--prompt', 'x')
  assert result.returncode == 1
  assert result.stderr == f'error: no checkpoint in {tmp_path}/checkpoints\n'
