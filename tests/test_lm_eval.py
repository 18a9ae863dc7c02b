"""lm-eval's model `gptjax` (gptjax/downstream/harness.py, gptjax/lm_eval.py): its scores against
gptjax's own and the model's logits, on local lm-eval tasks, and through lm-eval's command line."""

import functools
import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('lm_eval', reason='the [eval] extra is not installed')

# Nothing from the Hub: the tasks below are local JSONL files (set before datasets is imported).
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lm_eval  # noqa: E402
import numpy as np  # noqa: E402
from conftest import make_pretrained_workdir  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model, model_registry  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from gptjax.decoding import sampling  # noqa: E402
from gptjax.downstream import few_shot, tasks  # noqa: E402
from gptjax.downstream.harness import GPTJaxLM  # noqa: E402
from gptjax.errors import UserError  # noqa: E402
from gptjax.models.losses import token_cross_entropy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CTX = 64  # gptjax/configs/tiny.py

MC_EXAMPLES = [
  {
    'context': f'x = {i}\ny = x + 1  # y is ',
    'choices': [str(i + 1), str(i + 2), 'None'],
    'label': i % 3,
  }
  for i in range(6)
]
TEXTS = [
  {'text': 'def f(x):\n    return x + 1\n'},  # shorter than n_ctx: one window
  {'text': ''.join(f'def g_{i}(v): return v * {i}\n' for i in range(6))},  # 150 bytes: three
]
GEN_EXAMPLES = [
  {'context': 'def h(value):\n    return', 'target': ' value'},
  {'context': '# ' + 'a long comment, ' * 8 + '\nimport', 'target': ' os'},  # cut from the left
  {'context': 'class A:\n', 'target': '    pass'},
]


def _task_files(directory) -> str:
  """Three lm-eval tasks (YAML + JSONL) in `directory`: multiple choice, perplexity, generation."""
  os.makedirs(directory, exist_ok=True)
  data = {'toy_mc': MC_EXAMPLES, 'toy_rolling': TEXTS, 'toy_gen': GEN_EXAMPLES}
  for name, examples in data.items():
    with open(os.path.join(directory, f'{name}.jsonl'), 'w') as f:
      f.writelines(json.dumps(e) + '\n' for e in examples)
  dataset = lambda name: (
    f'dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {directory}/{name}.jsonl\n'
    f'  cache_dir: {directory}/hf_cache\ntest_split: test\n'
  )
  yamls = {
    'toy_mc': 'output_type: multiple_choice\ndoc_to_text: "{{context}}"\n'
    'doc_to_choice: "{{choices}}"\ndoc_to_target: label\ntarget_delimiter: ""\n'
    'metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n'
    '  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n',
    'toy_rolling': 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
    'doc_to_target: "{{text}}"\n'
    'metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n',
    'toy_gen': 'output_type: generate_until\ndoc_to_text: "{{context}}"\n'
    'doc_to_target: "{{target}}"\ngeneration_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 12\n'
    '  do_sample: false\nmetric_list:\n  - metric: exact_match\n',
  }
  for name, body in yamls.items():
    with open(os.path.join(directory, f'{name}.yaml'), 'w') as f:
      f.write(f'task: {name}\n{dataset(name)}{body}')
  return str(directory)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return make_pretrained_workdir(tmp_path_factory.mktemp('lm_eval') / 'run')


@pytest.fixture(scope='module')
def lm(workdir):
  return GPTJaxLM(workdir, batch_size=4)


@pytest.fixture(scope='module')
def task_dir(tmp_path_factory):
  return _task_files(tmp_path_factory.mktemp('lm_eval_tasks'))


def _requests(kind: str, arguments: list[tuple]) -> list[Instance]:
  return [Instance(kind, {}, args, i) for i, args in enumerate(arguments)]


def _logits(lm: GPTJaxLM, ids: list[int]) -> jax.Array:
  """The model's logits (L, V) for ids (L + 1 at most n_ctx + 1) run alone. Right-padded to n_ctx
  only to reuse one compilation: causal attention keeps the padding out of every position before
  it."""
  padded = jnp.array([ids[:-1] + [0] * (N_CTX + 1 - len(ids))])
  return _apply(lm.model, lm.params, padded)[0, : len(ids) - 1]


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, ids_1xL: jax.Array) -> jax.Array:
  return model.apply({'params': params}, ids_1xL)


def _logprobs(lm: GPTJaxLM, ids: list[int]) -> np.ndarray:
  """log p(ids[t + 1] | ids[:t + 1]) for each t, by gptjax's token cross-entropy."""
  return -np.asarray(token_cross_entropy(_logits(lm, ids)[None], jnp.array([ids[1:]])))[0]


def test_gptjax_is_registered_beside_lm_evals_own_models():
  assert get_model('gptjax') is GPTJaxLM
  assert 'hf' in model_registry  # the built-in models stay registered


def test_loglikelihood_is_gptjax_scoring_cut_from_the_left(lm):
  tok = lm.tokenizer
  pairs = [
    ('def f(x):\n    return', ' x'),
    ('', 'import os'),  # an empty context: BOS alone
    ('value = ', '42'),  # a trailing space stays in the context: bytes split anywhere
    ('#' * 100 + '\nx = 1', '\ny = 2'),  # 113 tokens with BOS: the first 48 are cut
  ]
  results = lm.loglikelihood(_requests('loglikelihood', pairs))
  # The same pairs through python -m gptjax.evaluate's scorer.
  sequences = [few_shot.encode_pair(tok, c, x, N_CTX)[:2] for c, x in pairs]
  logprob, greedy = few_shot.score(lm.model, lm.params, sequences)
  np.testing.assert_allclose([r[0] for r in results], logprob, rtol=1e-5, atol=1e-5)
  assert [r[1] for r in results] == greedy.tolist()
  # And against the logits of each sequence run alone, built by hand.
  for (context, continuation), (value, is_greedy) in zip(pairs, results):
    ids = [tok.bos_id, *tok.encode(context + continuation)][-(N_CTX + 1) :]
    n = len(tok.encode(continuation))
    assert value == pytest.approx(_logprobs(lm, ids)[-n:].sum(), rel=1e-5, abs=1e-5)
    argmax = np.argmax(_logits(lm, ids)[-n:], -1)
    assert is_greedy == bool((argmax == np.array(ids[-n:])).all())
  with pytest.raises(UserError, match='request 1: the answer alone is 65 tokens'):
    lm.loglikelihood(_requests('loglikelihood', [('a', 'b' * 65)]))


def test_rolling_loglikelihood_is_the_sum_of_each_tokens_log_likelihood(lm):
  tok = lm.tokenizer
  short, long = TEXTS[0]['text'], TEXTS[1]['text']
  t = tok.encode(long)
  assert len(t) == 150
  # lm-eval's windows (its Hugging Face model's): every token predicted once, n_ctx at a time,
  # the last window with a full context.
  assert lm.rolling_windows(long) == [
    ([tok.bos_id, *t[:64]], 64),
    (t[63:128], 64),
    (t[150 - 65 :], 22),
  ]
  short_ll, long_ll, empty_ll = lm.loglikelihood_rolling(
    _requests('loglikelihood_rolling', [(short,), (long,), ('',)])
  )
  assert short_ll == pytest.approx(_logprobs(lm, [tok.bos_id, *tok.encode(short)]).sum(), rel=1e-5)
  by_window = (
    _logprobs(lm, [tok.bos_id, *t[:64]]).sum()
    + _logprobs(lm, t[63:128]).sum()
    + _logprobs(lm, t[85:150])[-22:].sum()
  )
  assert long_ll == pytest.approx(by_window, rel=1e-5)
  assert empty_ll == 0


def test_generate_until_is_the_kv_cache_decoder_cut_at_the_stop_strings(lm):
  tok = lm.tokenizer
  contexts = [e['context'] for e in GEN_EXAMPLES] + ['x', 'y = (']  # 5: two batches of 4
  free = lm.generate_until(
    _requests('generate_until', [(c, {'max_gen_toks': 10, 'until': []}) for c in contexts])
  )
  for context, text in zip(contexts, free):
    prompt = [tok.bos_id, *tok.encode(context)][-(N_CTX - 10) :]
    new_ids = sampling.generate_batch(
      lm.model, lm.params, [prompt], 10, jax.random.PRNGKey(0), 0.0, eos_id=tok.eos_id
    )[0]
    assert text == tok.decode(new_ids)
  # A stop string cuts the text before it; requests of other gen_kwargs are batched apart.
  stop = free[0][3:5]
  cut = lm.generate_until(
    _requests(
      'generate_until',
      [(contexts[0], {'max_gen_toks': 10, 'until': [stop]}), (contexts[1], {'max_gen_toks': 10})],
    )
  )
  assert cut == [free[0][: free[0].index(stop)], free[1]]
  with pytest.raises(UserError, match='max_gen_toks=64 must be 1 to n_ctx - 1 = 63'):
    lm.generate_until(_requests('generate_until', [('x', {'max_gen_toks': 64})]))


def test_local_lm_eval_tasks_score_as_gptjax_does(lm, task_dir):
  results = lm_eval.simple_evaluate(
    model=lm,
    tasks=['toy_mc', 'toy_rolling', 'toy_gen'],
    task_manager=TaskManager(include_path=task_dir, include_defaults=False),
    log_samples=True,
  )
  samples = results['samples']
  # Multiple choice: each choice's log-likelihood is gptjax's, and so are both accuracies (with
  # bytes for tokens, lm-eval's per-character normalisation is gptjax's per-token one).
  mc = sorted(samples['toy_mc'], key=lambda s: s['doc_id'])
  task = tasks.Task('toy_mc', 'multiple_choice', {'test': MC_EXAMPLES})
  for sample, example in zip(mc, MC_EXAMPLES):
    sequences = [
      few_shot.encode_pair(lm.tokenizer, example['context'], c, N_CTX)[:2]
      for c in example['choices']
    ]
    expected, _ = few_shot.score(lm.model, lm.params, sequences)
    np.testing.assert_allclose([r[0] for r in sample['filtered_resps']], expected, rtol=1e-5)
  ours = few_shot.evaluate_task(lm.tokenizer, lm.model, lm.params, task)
  assert results['results']['toy_mc']['acc,none'] == pytest.approx(ours['accuracy'])
  assert results['results']['toy_mc']['acc_norm,none'] == pytest.approx(ours['accuracy_norm'])
  # Perplexity: the documents' log-likelihoods, and bits per byte from them.
  rolling = sorted(samples['toy_rolling'], key=lambda s: s['doc_id'])
  direct = lm.loglikelihood_rolling(
    _requests('loglikelihood_rolling', [(e['text'],) for e in TEXTS])
  )
  np.testing.assert_allclose([s['filtered_resps'][0] for s in rolling], direct, rtol=1e-6)
  n_bytes = sum(len(e['text'].encode()) for e in TEXTS)
  assert results['results']['toy_rolling']['bits_per_byte,none'] == pytest.approx(
    -sum(direct) / n_bytes / np.log(2), rel=1e-6
  )
  # Generation: the task's gen_kwargs (until a newline, 12 tokens at most).
  gen = sorted(samples['toy_gen'], key=lambda s: s['doc_id'])
  direct = lm.generate_until(
    _requests(
      'generate_until',
      [(e['context'], {'until': ['\n'], 'max_gen_toks': 12}) for e in GEN_EXAMPLES],
    )
  )
  assert [s['filtered_resps'][0] for s in gen] == direct
  assert all('\n' not in text for text in direct)


@pytest.mark.slow
def test_the_command_line_runs_lm_evals_own_with_the_gptjax_model(workdir, task_dir, tmp_path):
  def lm_eval_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
      [sys.executable, '-m', 'gptjax.lm_eval', *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )

  common = ('--model', 'gptjax', '--tasks', 'toy_mc', '--include_path', task_dir)
  result = lm_eval_cli(
    *common,
    '--model_args',
    f'workdir={workdir}',
    '--batch_size',
    '4',
    '--output_path',
    str(tmp_path / 'out'),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'toy_mc' in result.stdout and 'acc_norm' in result.stdout
  (path,) = glob.glob(str(tmp_path / 'out' / '**' / 'results_*.json'), recursive=True)
  with open(path) as f:
    written = json.load(f)
  lm = GPTJaxLM(workdir)
  task = tasks.Task('toy_mc', 'multiple_choice', {'test': MC_EXAMPLES})
  ours = few_shot.evaluate_task(lm.tokenizer, lm.model, lm.params, task)
  assert written['results']['toy_mc']['acc,none'] == pytest.approx(ours['accuracy'])
  assert written['config']['model'] == 'gptjax'
  result = lm_eval_cli(*common, '--model_args', f'workdir={tmp_path}/nowhere')
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1].startswith(f'error: {tmp_path}/nowhere holds no run')
