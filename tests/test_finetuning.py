"""GPT-1 fine-tuning: input transformations, the objective, vocabulary extension, a whole run."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_pretrained_workdir, preempt_after_step

from gptjax import configuration
from gptjax.configs import finetune as finetune_config
from gptjax.configs import tiny
from gptjax.data.tokenizers import ByteTokenizer
from gptjax.downstream import finetuning, task_inputs, tasks
from gptjax.errors import Preempted, UserError
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.training import step as step_lib
from gptjax.training.metrics import read_metrics
from gptjax.training.optimizer import make_optimizer, weight_decay_mask
from gptjax.training.state import TrainState, init_state, load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A checkpoint 3 embedding rows short of its tokenizer's vocabulary (as a converted model
  without the fine-tuning markers would be): every run here goes through extend_vocab."""
  return make_pretrained_workdir(
    tmp_path_factory.mktemp('pretrained') / 'run', vocab_rows=TOK.vocab_size - 3
  )


def _ids(text: str) -> list[int]:
  return TOK.encode(text)


def test_input_transformations_are_the_documented_sequences():
  s, d, x = TOK.start_id, TOK.delim_id, TOK.extract_id
  assert task_inputs.transform(TOK, 'classification', {'text': 'ab', 'label': 0}, 64) == [
    [s, *_ids('ab'), x]
  ]
  assert task_inputs.transform(
    TOK, 'entailment', {'premise': 'p', 'hypothesis': 'hq', 'label': 1}, 64
  ) == [[s, *_ids('p'), d, *_ids('hq'), x]]
  assert task_inputs.transform(TOK, 'similarity', {'a': 'a1', 'b': 'b', 'label': 0}, 64) == [
    [s, *_ids('a1'), d, *_ids('b'), x],
    [s, *_ids('b'), d, *_ids('a1'), x],
  ]
  assert task_inputs.transform(
    TOK, 'multiple_choice', {'context': 'c', 'choices': ['y', 'zz'], 'label': 1}, 64
  ) == [[s, *_ids('c'), d, *_ids('y'), x], [s, *_ids('c'), d, *_ids('zz'), x]]
  # Too long for 8 positions (5 beside the markers): cut away from the delimiter, the first segment
  # losing its start, the second its end, the second keeping at least half the room.
  assert task_inputs.transform(
    TOK, 'entailment', {'premise': 'abcdef', 'hypothesis': 'xy', 'label': 0}, 8
  ) == [[s, *_ids('def'), d, *_ids('xy'), x]]
  assert task_inputs.transform(
    TOK, 'entailment', {'premise': 'a', 'hypothesis': 'xyzuvw', 'label': 0}, 8
  ) == [[s, *_ids('a'), d, *_ids('xyzu'), x]]
  assert task_inputs.transform(
    TOK, 'entailment', {'premise': 'abcdef', 'hypothesis': 'uvwxyz', 'label': 0}, 8
  ) == [[s, *_ids('def'), d, *_ids('uv'), x]]
  assert task_inputs.transform(TOK, 'classification', {'text': 'abcdefghij', 'label': 0}, 8) == [
    [s, *_ids('efghij'), x]
  ]


def _finetuner(kind: str, num_labels: int = 3) -> tuple[finetuning.Finetuner, dict]:
  config = ModelConfig(
    vocab_size=TOK.vocab_size, n_ctx=16, n_layers=2, n_heads=2, d_model=16, d_ff=32
  )
  model = finetuning.Finetuner(GPT(config), kind, num_labels, head_dropout=0.1)
  params = {
    'gpt': model.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))['params'],
    'head': model.init_head(jax.random.PRNGKey(1)),
  }
  return model, params


def _batch(kind: str, examples: list[dict], n_rows: int | None = None) -> dict:
  encoded = task_inputs.encode_split(TOK, kind, examples, 16)
  encoded = task_inputs.pad_to(encoded, n_rows or encoded.ids_NxRxL.shape[1], 16, TOK.pad_id)
  return next(task_inputs.batches(encoded, len(examples) + 1))  # one padding row at weight 0


def test_similarity_is_symmetric_in_its_inputs():
  model, params = _finetuner('similarity')
  examples = [
    {'a': 'def f(x):', 'b': 'return x', 'label': 1},
    {'a': 'ab', 'b': 'cdefg', 'label': 0},
  ]
  swapped = [{'a': e['b'], 'b': e['a'], 'label': e['label']} for e in examples]
  apply = jax.jit(model.apply)
  scores = [
    apply(params, b['ids'], b['lengths'])[0]
    for b in (_batch('similarity', examples), _batch('similarity', swapped))
  ]
  np.testing.assert_array_equal(scores[0], scores[1])
  assert not np.allclose(scores[0][0], scores[0][1])  # and the two examples do differ


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _one_row(model: finetuning.Finetuner):
  """(logits (L, V), hidden (L, D)) of one unpadded sequence, run alone. It is right-padded to
  n_ctx only to reuse one compilation: causal attention keeps the padding out of every position
  before it."""
  apply = jax.jit(lambda p, ids_1xL: model.model.apply({'params': p}, ids_1xL, return_hidden=True))

  def run(params, ids: list[int]):
    padded = jnp.array([ids + [TOK.pad_id] * (model.model.config.n_ctx - len(ids))])
    logits, hidden = apply(params['gpt'], padded)
    return logits[0, : len(ids)], hidden[0, : len(ids)]

  return run


@pytest.mark.parametrize(
  'kind, examples',
  [
    ('classification', [{'text': 'abc', 'label': 2}, {'text': 'hello there', 'label': 0}]),
    (
      'multiple_choice',
      [
        {'context': 'x = ', 'choices': ['1', '22', '333'], 'label': 1},
        {'context': 'y', 'choices': ['a', 'bb'], 'label': 0},
      ],
    ),  # a missing choice
  ],
)
def test_the_objective_is_the_task_loss_plus_lambda_times_the_lm_loss(kind, examples):
  model, params = _finetuner(kind)
  batch = _batch(kind, examples)
  scores_BxK, logits = jax.jit(model.apply)(params, batch['ids'], batch['lengths'])
  pure, parts = finetuning.objective(scores_BxK, logits, batch, lm_coef=0.0)
  with_lm, _ = finetuning.objective(scores_BxK, logits, batch, lm_coef=0.5)
  # Row by row: the task's cross-entropy from the hidden state at EXTRACT, and the next-token
  # cross-entropy of every token after the first.
  one_row = _one_row(model)
  kernel, bias = (np.asarray(params['head']['linear'][k], np.float64) for k in ('kernel', 'bias'))
  task_losses, token_losses = [], []
  for i, example in enumerate(examples):
    rows = task_inputs.transform(TOK, kind, example, 16)
    outputs = [[np.asarray(a, np.float64) for a in one_row(params, r)] for r in rows]
    scores = [hidden[-1] @ kernel + bias for _, hidden in outputs]
    scores = np.concatenate(scores) if kind == 'multiple_choice' else scores[0]
    task_losses.append(-_log_softmax(scores)[example['label']])
    for ids, (logits_LxV, _) in zip(rows, outputs):
      token_losses += list(-_log_softmax(logits_LxV[:-1])[np.arange(len(ids) - 1), ids[1:]])
    if kind == 'multiple_choice' and len(rows) < scores_BxK.shape[1]:
      assert scores_BxK[i, len(rows) :].max() <= -1e9  # padding choices never win
  np.testing.assert_allclose(pure, np.mean(task_losses), rtol=1e-5)
  np.testing.assert_allclose(parts['task_loss'], pure, rtol=1e-6)
  np.testing.assert_allclose(with_lm - pure, 0.5 * np.mean(token_losses), rtol=1e-4)


def test_missing_embedding_rows_are_added_from_a_normal_distribution(pretrained):
  params = {'wte': {'embedding': jnp.ones((5, 4000))}, 'lm_head': {'kernel': jnp.ones((4000, 5))}}
  extended = finetuning.extend_vocab(params, 8, jax.random.PRNGKey(0))
  assert extended['wte']['embedding'].shape == (8, 4000)
  assert extended['lm_head']['kernel'].shape == (4000, 8)
  np.testing.assert_array_equal(extended['wte']['embedding'][:5], 1)
  assert float(jnp.std(extended['wte']['embedding'][5:])) == pytest.approx(0.02, rel=0.05)
  assert float(jnp.std(extended['lm_head']['kernel'][:, 5:])) == pytest.approx(0.02, rel=0.05)
  # The checkpoint of `pretrained` lacks 3 rows: it loads with them added, the others unchanged.
  _, _, model_config, loaded = finetuning.load_pretrained(pretrained, seed=0)
  assert model_config.vocab_size == TOK.vocab_size
  table = loaded['wte']['embedding']
  assert table.shape == (TOK.vocab_size, 32)
  assert 0 < float(jnp.std(table[-3:])) < 0.05


def test_parameters_are_read_back_without_building_an_optimizer(tmp_path, monkeypatch):
  workdir = make_pretrained_workdir(tmp_path / 'run')
  config = tiny.get_config()
  model = GPT(configuration.model_config(config, TOK.vocab_size))
  saved = jax.jit(lambda: init_state(model, make_optimizer(config.train), config.seed))().params

  def no_optimizer(*args, **kwargs):
    raise AssertionError('an optimizer was built to read parameters')

  monkeypatch.setattr(optax, 'adamw', no_optimizer)
  _, _, params = load_run(workdir)
  jax.tree.map(np.testing.assert_array_equal, params, saved)
  _, _, _, pretrained_params = finetuning.load_pretrained(workdir, seed=0)
  jax.tree.map(np.testing.assert_array_equal, pretrained_params, saved)


def test_the_shared_weight_decay_mask_is_fine_tunings_own_rule():
  """Fine-tuning had its own mask (matrices other than the embedding tables); on the fine-tuner's
  unscanned GPT and head it is the shared one (Dense kernels)."""
  _, params = _finetuner('classification')
  own = jax.tree_util.tree_map_with_path(
    lambda path, leaf: leaf.ndim >= 2 and not {'wte', 'wpe'} & {k.key for k in path}, params
  )
  assert weight_decay_mask(params) == own


def test_fine_tuning_goes_through_the_shared_step_with_accumulation_and_the_guard():
  model, params = _finetuner('classification')
  examples = [
    {'text': text, 'label': i % 3}  # one length: each micro-batch has as many tokens
    for i, text in enumerate(['abc', 'xyz', 'def', 'a b', 'x=1', 'yes', 'zzz', 'pqr'])
  ]
  encoded = task_inputs.encode_split(TOK, 'classification', examples, 16)
  batch = next(task_inputs.batches(task_inputs.pad_to(encoded, 1, 16, TOK.pad_id), 8))
  ft = finetune_config.get_config('cpu').finetune
  train = finetuning.train_config(ft, steps_per_epoch=4, seq_len=16)
  optimizer = make_optimizer(train)
  objective = finetuning.make_objective(model, ft.lm_coef)
  state = TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.PRNGKey(2),
  )
  steps = {
    accum: jax.jit(
      step_lib.make_train_step(objective, optimizer, accum, True, ('task_loss', 'lm_loss'))
    )
    for accum in (1, 4)
  }
  (_, one), (_, four) = steps[1](state, batch), steps[4](state, batch)
  assert bool(one['finite']) and bool(four['finite'])
  for key in ('train_loss', 'train_task_loss', 'train_lm_loss', 'grad_norm'):
    np.testing.assert_allclose(four[key], one[key], rtol=1e-5)
  np.testing.assert_allclose(
    one['train_loss'], one['train_task_loss'] + ft.lm_coef * one['train_lm_loss'], rtol=1e-6
  )
  broken = {**batch, 'weights': np.full_like(batch['weights'], np.nan)}
  new_state, metrics = steps[1](state, broken)
  assert not bool(metrics['finite'])
  assert int(new_state.step) == 1
  jax.tree.map(
    np.testing.assert_array_equal,
    (new_state.params, new_state.opt_state),
    (state.params, state.opt_state),
  )


def _easy_task(directory) -> str:
  """Classify whether a line holds 'yes' or 'no', among random numbers."""
  rng = np.random.default_rng(0)
  os.makedirs(directory)
  for split, n in (('train', 160), ('validation', 48), ('test', 48)):
    with open(os.path.join(directory, f'{split}.jsonl'), 'w') as f:
      for _ in range(n):
        label = int(rng.integers(2))
        f.write(
          json.dumps(
            {
              'text': f'{rng.integers(100)} {"yes" if label else "no"} {rng.integers(100)}',
              'label': label,
            }
          )
          + '\n'
        )
  return str(directory)


def _config(pretrained: str, task: str, **overrides):
  config = finetune_config.get_config('cpu')
  config.finetune.update(
    {'init_from': pretrained, 'task': task, 'lr': 3e-3, 'epochs': 2, **overrides}
  )
  return config


def _listing(directory: str) -> dict[str, float]:
  return {
    os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
    for root, dirs, files in os.walk(directory)
    for name in files + dirs
  }


def test_finetuning_learns_an_easy_task_and_keeps_the_best_checkpoint(pretrained, tmp_path):
  before = _listing(pretrained)
  workdir = str(tmp_path / 'ft')
  results = finetuning.finetune(
    _config(pretrained, _easy_task(tmp_path / 'task')), workdir, show_progress=False
  )
  assert results['validation_accuracy'] >= 0.9
  assert results['test_accuracy'] >= 0.85
  assert _listing(pretrained) == before  # the pre-training workdir is left as it was
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    epochs = [json.loads(line) for line in f]
  assert [e['epoch'] for e in epochs] == [1, 2]
  best = max(epochs, key=lambda e: e['validation_accuracy'])
  assert results['best_step'] == best['step']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
    str(best['step']),
    'fingerprints.json',
  ]
  run = finetuning.load_finetuned(workdir)
  validation = tasks.load_task(str(tmp_path / 'task')).split('validation')
  predicted = finetuning.predict(run, validation)
  assert np.mean(predicted == [e['label'] for e in validation]) == results['validation_accuracy']
  config = _config(pretrained, str(tmp_path / 'task'))
  assert finetuning.finetune(config, workdir, show_progress=False) == results  # finished already
  assert not os.path.exists(os.path.join(workdir, finetuning.RESUME_DIR))


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(
  pretrained, tmp_path, monkeypatch
):
  config = _config(pretrained, _easy_task(tmp_path / 'task'))  # 2 epochs of 10 steps
  whole = finetuning.finetune(config, str(tmp_path / 'whole'), show_progress=False)

  preempt_after_step(monkeypatch, 13)  # 3 steps into epoch 2, after a best checkpoint
  workdir = str(tmp_path / 'resumed')
  with pytest.raises(Preempted, match='run the same command to continue'):
    finetuning.finetune(config, workdir, show_progress=False)
  assert sorted(os.listdir(os.path.join(workdir, finetuning.RESUME_DIR))) == [
    '13',
    'fingerprints.json',
  ]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', 'fingerprints.json']
  with pytest.raises(UserError, match='finetune.lr 0.003 -> 0.001'):
    finetuning.finetune(
      _config(pretrained, config.finetune.task, lr=1e-3), workdir, show_progress=False
    )
  resumed = finetuning.finetune(config, workdir, show_progress=False)
  assert {k: v for k, v in resumed.items() if k != 'wall_s'} == {
    k: v for k, v in whole.items() if k != 'wall_s'
  }
  assert not os.path.exists(os.path.join(workdir, finetuning.RESUME_DIR))  # finished
  accuracies = lambda w: [
    (r['step'], r['validation_accuracy']) for r in read_metrics(w) if 'validation_accuracy' in r
  ]  # the train losses of the epoch cut short are logged over its parts
  assert accuracies(workdir) == accuracies(str(tmp_path / 'whole'))
  best = finetuning.load_finetuned(workdir).params
  jax.tree.map(
    np.testing.assert_array_equal, best, finetuning.load_finetuned(str(tmp_path / 'whole')).params
  )


@pytest.mark.parametrize(
  'task, overrides, message',
  [
    ('{dir}/nothing.jsonl', {}, 'does not exist'),
    ('no_such_task', {}, 'unknown task'),
    ('stdlib_cloze', {}, 'cloze task; fine-tuning needs'),
    ('{easy}', {'init_from': '{dir}/nowhere'}, 'holds no pre-training run'),
    ('{easy}', {'num_labels': 1}, 'outside the 1 classes'),
    ('{easy}', {'lm_coef': -1.0}, 'lm_coef=-1.0 must be >= 0'),
  ],
)
def test_bad_input_raises_a_user_error(pretrained, tmp_path, task, overrides, message):
  easy = _easy_task(tmp_path / 'task')
  fill = lambda v: v.format(dir=tmp_path, easy=easy) if isinstance(v, str) else v
  config = _config(pretrained, fill(task), **{k: fill(v) for k, v in overrides.items()})
  with pytest.raises(UserError, match=message):
    finetuning.finetune(config, str(tmp_path / 'ft'), show_progress=False)
  assert not os.path.exists(tmp_path / 'ft' / 'config.json')


@pytest.mark.slow
def test_the_command_line_reports_bad_input_in_one_line(pretrained, tmp_path):
  bad = tmp_path / 'train.jsonl'
  bad.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": \n')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'gptjax.finetune',
      '--config',
      'finetune:cpu',
      '--workdir',
      str(tmp_path / 'ft'),
      f'--config.finetune.init_from={pretrained}',
      f'--config.finetune.task=train={bad},validation={bad}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr == f'error: {bad}:2: not valid JSON (Expecting value at column 24)\n'


def test_batch_sizes_must_divide_among_the_processes(pretrained, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  config = _config(pretrained, _easy_task(tmp_path / 'task'), batch_size=8, eval_batch_size=9)
  with pytest.raises(UserError, match=r'must be divisible by the \d+ devices and the 3 processes'):
    finetuning.finetune(config, str(tmp_path / 'ft'), show_progress=False)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices_match_one_device(pretrained, tmp_path):
  """The same global batches on 1 device and on 2 processes of 4 devices each (on loopback): the
  same losses and accuracies, the validation split counted once, only process 0 writing."""
  task = _easy_task(tmp_path / 'task')
  # 6 steps an epoch; the validation and test splits' second batch of 40 is mostly padding.
  overrides = {'batch_size': 8, 'eval_batch_size': 40, 'max_train_examples': 48}
  single = finetuning.finetune(
    _config(pretrained, task, **overrides), str(tmp_path / 'single'), show_progress=False
  )
  flags = [
    f'--config.finetune.{k}={v}'
    for k, v in {
      'init_from': pretrained,
      'task': task,
      'lr': 3e-3,
      'epochs': 2,
      **overrides,
    }.items()
  ]
  port, four = _free_port(), {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'gptjax.finetune',
        '--config',
        'finetune:cpu',
        '--workdir',
        str(tmp_path / 'multi'),
        *flags,
        '--config.distributed.initialize=True',
        f'--config.distributed.coordinator_address=127.0.0.1:{port}',
        '--config.distributed.num_processes=2',
        f'--config.distributed.process_id={i}',
      ],
      cwd=REPO,
      env=four,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  # Only process 0 reports (gloo's connection messages, from every process, aside).
  assert 'epoch 2' in outputs[0][0] and 'epoch' not in outputs[1][0] and '{' not in outputs[1][0]
  results = json.loads(outputs[0][0].splitlines()[-1])
  assert results['test_accuracy'] == single['test_accuracy']

  def epochs(workdir):
    with open(tmp_path / workdir / 'metrics.jsonl') as f:
      return [json.loads(line) for line in f]

  multi, expected = epochs('multi'), epochs('single')
  assert [e['validation_accuracy'] for e in multi] == [e['validation_accuracy'] for e in expected]
  np.testing.assert_allclose(
    [e['train_loss'] for e in multi], [e['train_loss'] for e in expected], rtol=1e-5
  )
  with open(tmp_path / 'multi' / 'checkpoints' / 'fingerprints.json') as f:
    assert list(json.load(f)) == [str(single['best_step'])]  # both processes took part in saving
