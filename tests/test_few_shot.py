"""Zero- and few-shot evaluation: the batched scorer against a loop, prompts, the command line."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_pretrained_workdir

from gptjax.data.tokenizers import ByteTokenizer
from gptjax.downstream import few_shot, tasks
from gptjax.errors import UserError
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()
N_CTX = 24


@pytest.fixture(scope='module')
def model_and_params():
  model = GPT(
    ModelConfig(vocab_size=TOK.vocab_size, n_ctx=N_CTX, n_layers=2, n_heads=2, d_model=16, d_ff=32)
  )
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, N_CTX), jnp.int32))[
    'params'
  ]


def _naive(model: GPT, params, ids: list[int], n: int) -> tuple[float, bool]:
  """Log-likelihood of the last n tokens and whether each is the argmax, from the logits of the
  sequence run alone (float64 log-softmax in numpy). It is right-padded to n_ctx only to reuse one
  compilation: causal attention keeps the padding out of every position before it."""
  padded = jnp.array([ids[:-1] + [0] * (N_CTX + 1 - len(ids))])
  logits_LxV = np.asarray(_apply(model, params, padded)[0, : len(ids) - 1], np.float64)
  logits_LxV = logits_LxV - logits_LxV.max(-1, keepdims=True)
  logprob_LxV = logits_LxV - np.log(np.exp(logits_LxV).sum(-1, keepdims=True))
  positions = np.arange(len(ids) - 1 - n, len(ids) - 1)
  targets = np.array(ids[len(ids) - n :])
  return (
    float(logprob_LxV[positions, targets].sum()),
    bool((logits_LxV[positions].argmax(-1) == targets).all()),
  )


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: GPT, params, ids_1xL: jax.Array) -> jax.Array:
  return model.apply({'params': params}, ids_1xL)


def test_the_batched_scorer_equals_a_loop_over_examples(model_and_params):
  model, params = model_and_params
  rng = np.random.default_rng(0)
  sequences = []
  for length in (2, 5, 9, 17, 18, 25, 25):  # two length buckets (16 and 24), padding in both
    ids = [int(i) for i in rng.integers(6, 262, length)]
    sequences.append((ids, int(rng.integers(1, length))))
  sequences.append(([TOK.bos_id, 7, 7], 2))
  logprob, greedy = few_shot.score(model, params, sequences, batch_size=3)
  naive = [_naive(model, params, ids, n) for ids, n in sequences]
  np.testing.assert_allclose(logprob, [value for value, _ in naive], rtol=1e-5)
  np.testing.assert_array_equal(greedy, [g for _, g in naive])


def test_pairs_are_encoded_after_bos_and_cut_from_the_left():
  ids, n, cut = few_shot.encode_pair(TOK, 'abc', 'de', n_ctx=10)
  assert (ids, n, cut) == ([TOK.bos_id, *TOK.encode('abcde')], 2, False)
  ids, n, cut = few_shot.encode_pair(TOK, 'abcdefgh', 'xy', n_ctx=4)
  assert (ids, n, cut) == (TOK.encode('fghxy'), 2, True)
  with pytest.raises(ValueError, match='answer alone is 5 tokens'):
    few_shot.encode_pair(TOK, 'a', 'vwxyz', n_ctx=4)


def _mc_task() -> tasks.Task:
  examples = [
    {'context': f'{i} + 1 = ', 'choices': [str(i + 1), str(i + 2), 'no'], 'label': i % 3}
    for i in range(12)
  ]
  return tasks.Task('toy', 'multiple_choice', {'train': examples[:6], 'test': examples[6:]})


def test_few_shot_prompts_are_fixed_by_the_seed_and_use_the_separator():
  task = _mc_task()
  train = task.split('train')
  shots = few_shot.demonstrations(train, 2, seed=3, index=1)
  assert shots == few_shot.demonstrations(train, 2, seed=3, index=1)
  assert few_shot.prompt('multiple_choice', task.split('test')[0], shots, separator='|') == (
    ''.join(d['context'] + d['choices'][d['label']] + '|' for d in shots) + '6 + 1 = '
  )
  assert all(d is not train[0] for d in few_shot.demonstrations(train, 5, 0, 0, exclude=0))
  with pytest.raises(UserError, match='2 shots need 2'):
    few_shot.demonstrations(train[:1], 2, 0, 0)


def test_an_8_shot_rename_prompt_fits_512_byte_tokens():
  task = tasks.build_stdlib_task('stdlib_rename_upper', 0)
  pool = task.split('train')
  longest = 0
  for split in ('validation', 'test'):
    for i, example in enumerate(task.split(split)):
      text = few_shot.prompt(task.kind, example, few_shot.demonstrations(pool, 8, 0, i))
      for choice in example['choices']:
        ids, n, truncated = few_shot.encode_pair(TOK, text, choice, n_ctx=512)
        assert not truncated and n == len(choice)
        longest = max(longest, len(ids))
  # The bound of the task's construction: BOS, then 9 of 'name ->' + ' answer' + separator,
  # names and answers at most 20 bytes.
  assert longest <= 1 + 9 * (20 + 3 + 21 + 2) <= 512


def test_multiple_choice_and_cloze_accuracy_match_a_loop(model_and_params):
  model, params = model_and_params
  task = _mc_task()
  result = few_shot.evaluate_task(TOK, model, params, task, shots=1, seed=2, batch_size=4)
  correct, correct_norm = [], []
  for i, example in enumerate(task.split('test')):
    text = few_shot.prompt(
      'multiple_choice', example, few_shot.demonstrations(task.split('train'), 1, 2, i)
    )
    scored = [
      _naive(model, params, *few_shot.encode_pair(TOK, text, c, N_CTX)[:2])[0]
      for c in example['choices']
    ]
    lengths = [len(TOK.encode(c)) for c in example['choices']]
    correct.append(np.argmax(scored) == example['label'])
    correct_norm.append(np.argmax(np.array(scored) / lengths) == example['label'])
  assert result['n'] == 6 and result['shots'] == 1 and result['chance'] == pytest.approx(1 / 3)
  assert result['accuracy'] == np.mean(correct)
  assert result['accuracy_norm'] == np.mean(correct_norm)
  assert result['stderr'] == pytest.approx(np.sqrt(np.mean(correct) * (1 - np.mean(correct)) / 6))
  cloze = tasks.Task(
    'toy_cloze',
    'cloze',
    {'test': [{'context': 'ab' * 8, 'target': 'ab'}, {'context': 'xyz', 'target': 'q'}]},
  )
  result = few_shot.evaluate_task(TOK, model, params, cloze, limit=1)
  logprob, greedy = _naive(model, params, *few_shot.encode_pair(TOK, 'ab' * 8, 'ab', N_CTX)[:2])
  assert result['n'] == 1 and result['accuracy'] == float(greedy)
  assert result['target_logprob'] == pytest.approx(logprob, rel=1e-5)


def test_other_task_kinds_are_refused(model_and_params):
  model, params = model_and_params
  task = tasks.Task('toy', 'classification', {'test': [{'text': 'a', 'label': 0}]}, 2)
  with pytest.raises(UserError, match='classification task; zero- and few-shot'):
    few_shot.evaluate_task(TOK, model, params, task)


def _evaluate(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.evaluate', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_the_command_line_prints_json_and_reports_bad_input_in_one_line(tmp_path):
  workdir = make_pretrained_workdir(tmp_path / 'run')
  path = tmp_path / 'mc.jsonl'
  path.write_text(''.join(json.dumps(e) + '\n' for e in _mc_task().split('train')))
  result = _evaluate('--workdir', workdir, '--task', str(path), '--shots', '2', '--json')
  assert result.returncode == 0, result.stderr
  output = json.loads(result.stdout)
  assert output['n'] == 6 and output['shots'] == 2 and 0 <= output['accuracy'] <= 1
  assert {'accuracy', 'stderr', 'n', 'accuracy_norm', 'stderr_norm'} <= set(output)
  path.write_text('{"context": "a", "choices": ["b", "c"], "label": 2}\n')
  result = _evaluate('--workdir', workdir, '--task', str(path))
  assert result.returncode == 1
  assert result.stderr == (
    f'error: {path}:1: label 2 is outside 0..1 (the example has 2 choices)\n'
  )
  result = _evaluate('--workdir', str(tmp_path / 'nowhere'), '--task', 'stdlib_cloze')
  assert result.returncode == 1
  assert result.stderr.startswith(f'error: {tmp_path}/nowhere holds no run')
