"""BERT fine-tuning through gptjax.finetune: [CLS] a [SEP] b [SEP] rows with segment ids, the head
on the final hidden state at [CLS], no auxiliary LM loss, resuming, and the errors for what it
cannot do."""

import dataclasses
import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import sentencepiece as spm
from conftest import make_pretrained_workdir, preempt_after_step

from gptjax.configs import finetune as finetune_config
from gptjax.configs import tiny, transformer_tiny
from gptjax.data.tokenizers import ByteTokenizer
from gptjax.downstream import backbones, finetuning, task_inputs, tasks
from gptjax.errors import Preempted, UserError
from gptjax.models import bert
from gptjax.models.config import ModelConfig
from gptjax.models.layers import padding_mask
from gptjax.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()
CLS, SEP, PAD = TOK.start_id, TOK.delim_id, TOK.pad_id


def _bert_config():
  """gptjax/configs/tiny.py as a BERT."""
  config = tiny.get_config()
  config.model.architecture = 'bert'
  return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  return make_pretrained_workdir(tmp_path_factory.mktemp('bert') / 'run', config=_bert_config())


def _ids(text: str) -> list[int]:
  return TOK.encode(text)


def test_rows_are_cls_a_sep_b_sep_with_segment_ids():
  markers = task_inputs.bert_markers(TOK)
  examples = [
    {'premise': 'p', 'hypothesis': 'hq', 'label': 1},
    {'premise': 'abc', 'hypothesis': 'x', 'label': 0},
  ]
  encoded = task_inputs.encode_split(TOK, 'entailment', examples, 16, markers)
  rows = [
    ([CLS, *_ids('p'), SEP], [*_ids('hq'), SEP]),
    ([CLS, *_ids('abc'), SEP], [*_ids('x'), SEP]),
  ]
  seq_len = max(len(a) + len(b) for a, b in rows)
  ids = np.full((2, 1, seq_len), PAD, np.int32)
  segments = np.zeros((2, 1, seq_len), np.int32)
  for i, (a, b) in enumerate(rows):
    ids[i, 0, : len(a) + len(b)] = a + b
    segments[i, 0, len(a) : len(a) + len(b)] = 1  # the first [SEP] is segment 0's
  np.testing.assert_array_equal(encoded.ids_NxRxL, ids)
  np.testing.assert_array_equal(encoded.segments_NxRxL, segments)
  np.testing.assert_array_equal(encoded.lengths_NxR, [[6], [7]])
  np.testing.assert_array_equal(encoded.labels_N, [1, 0])
  # One text: [CLS] text [SEP], all segment 0; a multiple choice: one row per choice.
  single = task_inputs.encode_split(
    TOK, 'classification', [{'text': 'ab', 'label': 0}], 16, markers
  )
  np.testing.assert_array_equal(single.ids_NxRxL, [[[CLS, *_ids('ab'), SEP]]])
  np.testing.assert_array_equal(single.segments_NxRxL, 0)
  choices = task_inputs.encode_split(
    TOK, 'multiple_choice', [{'context': 'c', 'choices': ['y', 'zz'], 'label': 1}], 16, markers
  )
  np.testing.assert_array_equal(
    choices.ids_NxRxL,
    [[[CLS, *_ids('c'), SEP, *_ids('y'), SEP, PAD], [CLS, *_ids('c'), SEP, *_ids('zz'), SEP]]],
  )
  np.testing.assert_array_equal(choices.segments_NxRxL, [[[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]])
  # Too long: cut away from the delimiter, as for a GPT (the same room beside three markers).
  assert task_inputs.transform(
    TOK, 'entailment', {'premise': 'abcdef', 'hypothesis': 'uvwxyz', 'label': 0}, 8, markers
  ) == [[CLS, *_ids('def'), SEP, *_ids('uv'), SEP]]


SMALL = ModelConfig(
  vocab_size=bert.mlm_vocab_size(TOK.vocab_size),
  n_ctx=16,
  n_layers=2,
  n_heads=2,
  d_model=16,
  d_ff=32,
  architecture='bert',
)


def test_the_head_reads_the_final_hidden_state_at_cls():
  model = finetuning.Finetuner(bert.BERT(SMALL), 'entailment', 3, head_dropout=0.1)
  params = model.init_params(jax.random.PRNGKey(0), jax.random.PRNGKey(1))
  assert set(params) == {'bert', 'head'}
  examples = [
    {'premise': 'a b', 'hypothesis': 'c', 'label': 2},
    {'premise': 'x', 'hypothesis': 'yes it is', 'label': 0},
  ]
  encoded = task_inputs.encode_split(TOK, 'entailment', examples, 16, task_inputs.bert_markers(TOK))
  batch = next(task_inputs.batches(task_inputs.pad_to(encoded, 1, 16, PAD), 2))
  apply = jax.jit(lambda p, b: model.apply(p, b['ids'], b['lengths'], segments_BxRxL=b['segments']))
  scores, lm_logits = apply(params, batch)
  assert scores.shape == (2, 3) and lm_logits is None  # BERT has no auxiliary LM loss
  # By hand: BERT on the rows, padding masked, then the linear head on position 0.
  ids, segments = batch['ids'][:, 0], batch['segments'][:, 0]
  _, hidden = jax.jit(
    lambda p, i, s: bert.BERT(SMALL).apply(
      {'params': p}, i, s, return_hidden=True, mask_Bx1xL=padding_mask(i, PAD)
    )
  )(params['bert'], ids, segments)
  head = params['head']['linear']
  np.testing.assert_allclose(
    scores, hidden[:, 0] @ head['kernel'] + head['bias'], rtol=1e-5, atol=1e-6
  )
  # The segments are read, and what stands at the padding is not.
  assert not np.allclose(apply(params, {**batch, 'segments': 0 * batch['segments']})[0], scores)
  padding = batch['ids'] == PAD
  other_padding = {
    **batch,
    'ids': np.where(padding, 100, batch['ids']),
    'segments': np.where(padding, 1, batch['segments']),
  }
  np.testing.assert_allclose(apply(params, other_padding)[0], scores, rtol=1e-5, atol=1e-6)
  parts = finetuning.objective(scores, None, batch, lm_coef=0.0)[1]
  assert set(parts) == {'task_loss', 'correct'}


def test_multiple_choice_scores_each_choice_and_a_missing_one_never_wins():
  model = finetuning.Finetuner(bert.BERT(SMALL), 'multiple_choice', 0, head_dropout=0.1)
  params = model.init_params(jax.random.PRNGKey(0), jax.random.PRNGKey(1))
  examples = [
    {'context': 'x = ', 'choices': ['1', '22', '333'], 'label': 1},
    {'context': 'y', 'choices': ['a', 'bb'], 'label': 0},  # a missing third choice
  ]
  markers = task_inputs.bert_markers(TOK)
  encoded = task_inputs.encode_split(TOK, 'multiple_choice', examples, 16, markers)
  batch = next(task_inputs.batches(task_inputs.pad_to(encoded, 3, 16, PAD), 2))
  objective = finetuning.make_objective(model, lm_coef=0.0)
  (value, metrics), grads = jax.jit(
    jax.value_and_grad(lambda p, b: objective(p, b, False, jax.random.PRNGKey(2)), has_aux=True)
  )(params, batch)
  assert np.isfinite(float(value)) and set(metrics) == {'loss', 'task_loss', 'correct'}
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  scores = jax.jit(
    lambda p, b: model.apply(p, b['ids'], b['lengths'], segments_BxRxL=b['segments'])[0]
  )(params, batch)
  assert scores.shape == (2, 3) and float(scores[1, 2]) <= -1e9 < float(scores[1, :2].min())


def test_pairs_need_a_second_segment_embedding():
  one_segment = dataclasses.replace(SMALL, type_vocab_size=1)
  backbones.BERT.check(one_segment, 'classification')  # one text: one segment
  for kind in ('entailment', 'similarity', 'multiple_choice'):
    with pytest.raises(UserError, match=f'{kind} tasks give BERT two segments, .*=1'):
      backbones.BERT.check(one_segment, kind)
  backbones.BERT.check(SMALL, 'entailment')


def _token_task(directory) -> str:
  """The label is whether a line holds the word 'yes' or 'no', among random numbers."""
  rng = np.random.default_rng(0)
  os.makedirs(directory)
  for split, n in (('train', 160), ('validation', 48), ('test', 48)):
    with open(os.path.join(directory, f'{split}.jsonl'), 'w') as f:
      for _ in range(n):
        label = int(rng.integers(2))
        text = f'{rng.integers(100)} {"yes" if label else "no"} {rng.integers(100)}'
        f.write(json.dumps({'text': text, 'label': label}) + '\n')
  return str(directory)


def _config(pretrained: str, task: str, **overrides):
  config = finetune_config.get_config('cpu')
  config.finetune.update(
    {'init_from': pretrained, 'task': task, 'lr': 1e-2, 'epochs': 2, 'lm_coef': 0.0, **overrides}
  )
  return config


@pytest.fixture(scope='module')
def whole_run(pretrained, tmp_path_factory):
  """(config, workdir, results) of one uninterrupted fine-tuning run on _token_task."""
  root = tmp_path_factory.mktemp('bert_ft')
  config = _config(pretrained, _token_task(root / 'task'))
  workdir = str(root / 'whole')
  return config, workdir, finetuning.finetune(config, workdir, show_progress=False)


def test_bert_learns_a_task_decided_by_one_word(whole_run):
  config, workdir, results = whole_run
  assert results['validation_accuracy'] >= 0.9
  assert results['test_accuracy'] >= 0.85
  assert results['lm_coef'] == 0.0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    epochs = [json.loads(line) for line in f]
  assert [e['epoch'] for e in epochs] == [1, 2]
  assert 'train_task_loss' in epochs[0] and 'train_lm_loss' not in epochs[0]
  with open(os.path.join(workdir, 'finetune.json')) as f:
    assert json.load(f)['model']['architecture'] == 'bert'
  run = finetuning.load_finetuned(workdir)
  assert set(run.params) == {'bert', 'head'}
  validation = tasks.load_task(config.finetune.task).split('validation')
  predicted = finetuning.predict(run, validation)
  assert np.mean(predicted == [e['label'] for e in validation]) == results['validation_accuracy']
  assert finetuning.finetune(config, workdir, show_progress=False) == results  # finished already


def test_an_interrupted_bert_run_resumes_and_ends_as_an_uninterrupted_one(
  whole_run, tmp_path, monkeypatch
):
  config, whole_workdir, whole = whole_run

  preempt_after_step(monkeypatch, 13)  # 3 steps into epoch 2 (of 10 steps each)
  workdir = str(tmp_path / 'resumed')
  with pytest.raises(Preempted, match='run the same command to continue'):
    finetuning.finetune(config, workdir, show_progress=False)
  assert sorted(os.listdir(os.path.join(workdir, finetuning.RESUME_DIR))) == [
    '13',
    'fingerprints.json',
  ]
  resumed = finetuning.finetune(config, workdir, show_progress=False)
  drop_time = lambda r: {k: v for k, v in r.items() if k != 'wall_s'}
  assert drop_time(resumed) == drop_time(whole)
  jax.tree.map(
    np.testing.assert_array_equal,
    finetuning.load_finetuned(workdir).params,
    finetuning.load_finetuned(whole_workdir).params,
  )


def _encoder_decoder_run(directory) -> str:
  os.makedirs(directory)
  workdir_lib.save_config(transformer_tiny.get_config(), str(directory))  # no checkpoint needed
  return str(directory)


def _run_without_cls(directory) -> str:
  """A BERT run whose SentencePiece tokenizer was trained without gptjax's control symbols: it
  maps <start> and <delim> to its unknown token."""
  texts = [f'def f_{i}(x):\n    return x * {i}\n' for i in range(200)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    model_type='bpe',
    vocab_size=300,
    byte_fallback=True,
    minloglevel=2,
  )
  os.makedirs(directory)
  with open(os.path.join(directory, 'tokenizer.model'), 'wb') as f:
    f.write(model.getvalue())
  config = _bert_config()
  config.tokenizer.kind, config.tokenizer.vocab_size = 'sentencepiece', 300
  workdir_lib.save_config(config, str(directory))  # the error comes before any checkpoint is read
  return str(directory)


@pytest.mark.parametrize(
  'case, message',
  [
    ('lm_coef', r'lm_coef=0.5, .* no auxiliary LM loss .*; set --config.finetune.lm_coef=0$'),
    ('encoder_decoder_run', r'a model.architecture=encoder_decoder run; this needs gpt or bert$'),
    ('encoder_decoder_config', r'encoder_decoder model cannot be fine-tuned; .* gpt or bert$'),
    ('no_cls', r'no_cls: the sentencepiece tokenizer has no \[CLS\] \(<start>\) token'),
  ],
)
def test_what_fine_tuning_cannot_start_from_is_a_user_error(pretrained, tmp_path, case, message):
  task = _token_task(tmp_path / 'task')
  if case == 'lm_coef':  # BERT has no next-token loss to add
    config = _config(pretrained, task, lm_coef=0.5)
  elif case == 'encoder_decoder_run':
    config = _config(_encoder_decoder_run(tmp_path / 'ed'), task)
  elif case == 'encoder_decoder_config':  # no init_from: the config's own model
    config = _config('', task)
    config.model.architecture = 'encoder_decoder'
  else:
    config = _config(_run_without_cls(tmp_path / 'no_cls'), task)
  with pytest.raises(UserError, match=message):
    finetuning.finetune(config, str(tmp_path / 'ft'), show_progress=False)
  assert not os.path.exists(tmp_path / 'ft')  # reported before anything is written


@pytest.mark.slow
def test_the_command_line_fine_tunes_a_bert_run(pretrained, tmp_path):
  task = _token_task(tmp_path / 'task')

  def command(workdir: str, *overrides: str):
    return subprocess.run(
      [
        sys.executable,
        '-m',
        'gptjax.finetune',
        '--config',
        'finetune:cpu',
        '--workdir',
        str(tmp_path / workdir),
        f'--config.finetune.init_from={pretrained}',
        f'--config.finetune.task={task}',
        *overrides,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )

  refused = command('refused')  # the config's lm_coef, 0.5
  assert refused.returncode == 1
  assert refused.stderr.startswith('error: finetune.lm_coef=0.5, ')
  assert refused.stderr.endswith('set --config.finetune.lm_coef=0\n')
  assert refused.stderr.count('\n') == 1
  result = command(
    'ft',
    '--config.finetune.lm_coef=0',
    '--config.finetune.epochs=1',
    '--config.finetune.max_train_examples=32',
  )
  assert result.returncode == 0, result.stderr
  results = json.loads(result.stdout.splitlines()[-1])
  assert results['kind'] == 'classification' and results['n_train'] == 32
  assert 'epoch 1: train loss' in result.stdout and 'LM' not in result.stdout
