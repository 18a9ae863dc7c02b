"""BERT and the encoder-decoder through the same configs, checks and training loop as GPT."""

import json
import os
import re

import jax
import numpy as np
import pytest

from gptjax import configuration
from gptjax.configs import (
  bert_base,
  bert_tiny,
  default,
  tiny,
  transformer_base,
  transformer_tiny,
)
from gptjax.data.tokenizers import ByteTokenizer
from gptjax.decoding import seq2seq
from gptjax.errors import UserError
from gptjax.models import accounting, registry
from gptjax.training import optimizer, trainer
from gptjax.training.state import load_run


@pytest.mark.parametrize('module', [transformer_base, transformer_tiny, bert_base, bert_tiny])
def test_shipped_configs_are_valid(module):
  configuration.validate(module.get_config(), device_count=1)


def test_transformer_base_has_the_papers_parameter_count():
  d, d_ff, vocab, layers = 512, 2048, 37_000, 6
  attention = 4 * (d * d + d)  # query, key, value and output projections with biases
  feed_forward = d * d_ff + d_ff + d_ff * d + d
  layer_norm = 2 * d
  encoder_layer = attention + feed_forward + 2 * layer_norm
  decoder_layer = 2 * attention + feed_forward + 3 * layer_norm  # plus cross-attention
  expected = vocab * d + layers * (encoder_layer + decoder_layer)  # one shared embedding
  count = accounting.count_params(configuration.model_config(transformer_base.get_config(), vocab))
  assert count.total == expected == 63_082_496
  assert abs(count.total / 65e6 - 1) < 0.03  # "65M" in the paper's Table 3


def test_bert_base_config_has_the_reference_masked_lm_count():
  # transformers.BertForMaskedLM(BertConfig()): tests/test_bert.py derives it from transformers.
  config = configuration.model_config(bert_base.get_config(), 30_521)
  assert config.vocab_size == 30_522  # [MASK] after the tokenizer's vocabulary
  assert accounting.count_params(config).total == 109_514_298


def _logged(workdir: str, key: str) -> dict[int, float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {row['step']: row[key] for row in rows if key in row}


def _small(config, steps: int):
  config.tokenizer.kind = 'byte'
  config.model.update(n_layers=2, n_heads=2, d_model=32, d_ff=128, n_ctx=64)
  config.train.update(
    steps=steps,
    warmup_steps=10,
    log_every=1,
    eval_every=steps,
    checkpoint_every=steps,
    eval_batches=2,
    global_batch_size=16,
  )
  return config


def test_bert_trains_through_the_training_loop(tmp_path):
  # Files of one 3-letter word repeated: a masked letter is given by its neighbours. (How soon a
  # masked LM leaves the unigram plateau varies from run to run; tests/test_bert.py checks that
  # it learns from context.)
  rng = np.random.default_rng(0)
  os.makedirs(tmp_path / 'corpus')
  for f in range(30):
    word = ''.join(rng.choice(list('abcdefghijklmnop'), size=3))
    (tmp_path / 'corpus' / f'{f}.txt').write_text((word + ' ') * 400)
  config = _small(bert_tiny.get_config(), steps=200)
  config.data.source, config.data.text_files = 'text_files', str(tmp_path / 'corpus' / '*.txt')
  config.train.update(seq_len=32, global_batch_size=64, lr=3e-3)
  workdir = str(tmp_path / 'run')
  metrics = trainer.train_and_evaluate(config, workdir, show_progress=False)
  losses = _logged(workdir, 'train_loss')
  assert losses[1] == pytest.approx(np.log(263), rel=0.1)  # 262 byte-tokenizer ids + [MASK]
  assert metrics['eval_loss'] < 0.6 * losses[1]
  assert 'eval_accuracy' in metrics and 'eval_bpb' not in metrics  # bpb is a language model's


def _reversal_pairs(path, n: int = 400) -> str:
  """JSONL pairs: a random word -> the word reversed."""
  rng = np.random.default_rng(0)
  with open(path, 'w') as f:
    for _ in range(n):
      word = ''.join(rng.choice(list('abcdefgh'), size=rng.integers(3, 8)))
      f.write(json.dumps({'source': word, 'target': word[::-1]}) + '\n')
  return str(path)


def test_encoder_decoder_learns_a_task_from_jsonl_pairs_through_the_training_loop(tmp_path):
  config = _small(transformer_tiny.get_config(), steps=250)
  config.data.update(
    source='pairs_jsonl', pairs_files=_reversal_pairs(tmp_path / 'pairs.jsonl'), val_fraction=0.1
  )
  config.encoder_decoder.source_len = 16
  config.train.update(seq_len=16, lr=3e-3, schedule='cosine')
  workdir = str(tmp_path / 'run')
  metrics = trainer.train_and_evaluate(config, workdir, show_progress=False)
  losses = _logged(workdir, 'train_loss')
  assert metrics['eval_loss'] < 0.25 * losses[1]
  tokenizer, model, params = load_run(workdir, 'encoder_decoder')
  with pytest.raises(UserError, match='holds a model.architecture=encoder_decoder run'):
    load_run(workdir)  # sampling and evaluation need a GPT
  source_ids = [*tokenizer.encode('abcdh'), tokenizer.eos_id]  # as gptjax/data/pairs.py writes
  source = np.array([source_ids + [tokenizer.pad_id] * (16 - len(source_ids))], np.int32)
  ids = seq2seq.greedy(
    model, params, source, 16, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
  )
  assert tokenizer.decode(np.asarray(ids)[0]) == 'hdcba'


@pytest.mark.parametrize(
  'overrides, message',
  [
    (
      {'model.architecture': 'encoder_decoder', 'encoder_decoder.n_encoder_layers': 2},
      'trains on \\(source, target\\) pairs',
    ),
    (
      {
        'model.architecture': 'encoder_decoder',
        'encoder_decoder.n_encoder_layers': 0,
        'data.source': 'stdlib_docstrings',
      },
      'needs encoder_decoder.n_encoder_layers >= 1',
    ),
    ({'data.source': 'stdlib_docstrings'}, 'only model.architecture=encoder_decoder'),
    (
      {
        'model.architecture': 'encoder_decoder',
        'encoder_decoder.n_encoder_layers': 1,
        'data.source': 'pairs_jsonl',
      },
      'needs data.pairs_files',
    ),
    (
      {
        'model.architecture': 'encoder_decoder',
        'encoder_decoder.n_encoder_layers': 1,
        'data.source': 'stdlib_docstrings',
        'tokenizer.kind': 'gpt2',
      },
      "tokenizer.kind='gpt2' pads",
    ),
    ({'model.architecture': 'transformer'}, "model.architecture='transformer'; choose one of"),
    ({'model.pos_emb': 'rotary', 'model.n_heads': 64}, 'rotary needs an even head width'),
    ({'train.schedule': 'exponential'}, "train.schedule='exponential'"),
  ],
)
def test_architecture_settings_are_checked(overrides, message):
  config = default.get_config()
  for field, value in overrides.items():
    section, name = field.split('.')
    config[section][name] = value
  with pytest.raises(UserError, match=message):
    configuration.validate(config, device_count=1)


def test_rsqrt_schedule_is_the_papers():
  config = transformer_base.get_config().train
  schedule = optimizer.learning_rate_schedule(config)
  d_model, warmup = 512, 4000
  for step in (1, 100, 4000, 16_000, 90_000):
    paper = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    assert float(schedule(step)) == pytest.approx(paper, rel=1e-5)


def test_the_architectures_build_from_one_entry_point():
  for module in (default, bert_tiny, transformer_tiny):
    model_config = configuration.model_config(module.get_config(), 512)
    assert (
      registry.build(model_config).config.architecture == module.get_config().model.architecture
    )


def test_no_module_outside_the_registry_branches_on_an_architecture_name():
  package = os.path.dirname(os.path.abspath(registry.__file__ + '/..'))
  names = '|'.join(registry.ARCHITECTURES)
  # A comparison with an architecture's name, or a membership test against names.
  branch = re.compile(rf"(==|!=)\s*'({names})'|'({names})'\s*(==|!=)|\bin\s*\(\s*'({names})'")
  found = []
  for directory, _, files in os.walk(package):
    if os.path.basename(directory) == 'models':
      continue
    for file in files:
      if file.endswith('.py'):
        with open(os.path.join(directory, file)) as f:
          found += [
            f'{file}:{i}: {line.strip()}' for i, line in enumerate(f, 1) if branch.search(line)
          ]
  assert not found, found


def test_every_record_builds_a_model_whose_objective_runs():
  for name, record in registry.ARCHITECTURES.items():
    config = {'gpt': tiny, 'bert': bert_tiny, 'encoder_decoder': transformer_tiny}[
      name
    ].get_config()
    model_config = configuration.model_config(config, 300)
    model = record.build(model_config, 0)
    params = registry.init_params(model, jax.random.PRNGKey(0))
    rows = jax.random.randint(jax.random.PRNGKey(1), (2, record.row_width(config)), 6, 300)
    value, metrics = record.objective(model, config, ByteTokenizer())(
      params, rows, True, jax.random.PRNGKey(2)
    )
    assert np.isfinite(float(value)) and np.isfinite(float(metrics['loss'])), name
