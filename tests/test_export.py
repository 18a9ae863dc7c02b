"""python -m gptjax.convert to_hf: gptjax runs as transformers checkpoints, logits and token ids
checked against transformers itself."""

import os
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from conftest import write_gpt2_tokenizer_files

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.data import hf_tokenizers, sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import hf_export
from gptjax.models.gpt import GPT
from gptjax.training import checkpoint, state
from gptjax.training import workdir as workdir_lib
from gptjax.training.optimizer import make_optimizer

torch = pytest.importorskip('torch', reason='the [hf] extra is not installed')
transformers = pytest.importorskip('transformers', reason='the [hf] extra is not installed')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  "  it's 3.14 naïve café 你好 🐍\r\n\t  x\u2581y \u2581\u2581",
  'class A:\n\tpass  # <s> </s> <pad> <|endoftext|> <start>',
  '',
  ' ',
  'x' * 300,
]


def _make_workdir(path, tokenizer=None, seed: int = 0, **model) -> str:
  """A run of gptjax/configs/tiny.py with `model` fields holding a checkpoint whose every
  parameter is random (LayerNorm scales around 1, biases too), so that a swapped, transposed or
  unscaled tensor shows in the logits."""
  tokenizer = tokenizer or tokenizer_lib.ByteTokenizer()
  config = tiny.get_config()
  config.tokenizer.update(kind=tokenizer.kind, vocab_size=tokenizer.vocab_size)
  config.model.update(model)
  config.sample.max_new_tokens = 0
  os.makedirs(path)
  workdir_lib.save_config(config, str(path))
  if tokenizer.kind != 'byte':
    tokenizer_lib.save(tokenizer, str(path))
  gpt = GPT(configuration.model_config(config, tokenizer.vocab_size))
  train_state = jax.jit(lambda: state.init_state(gpt, make_optimizer(config.train), config.seed))()
  rng = np.random.default_rng(seed)

  def randomize(key_path, leaf):
    mean = 1.0 if key_path[-1].key == 'scale' else 0.0
    return rng.normal(mean, 0.2, leaf.shape).astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(randomize, train_state.params)
  mngr = checkpoint.manager(str(path), 1)
  checkpoint.save(mngr, train_state.replace(params=params))
  mngr.close()
  return str(path)


def _assert_same_logits(workdir: str, out: str, expected_class: str) -> None:
  reference = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(reference).__name__ == expected_class
  _, model, params = state.load_run(workdir)
  ids_BxL = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, model.config.n_ctx))
  with torch.no_grad():
    theirs = reference(torch.tensor(ids_BxL)).logits.numpy()
  ours = model.apply({'params': params}, ids_BxL)
  assert theirs.shape == ours.shape
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


PRE_LN = {
  'tied': {},
  'untied': {'tie_embeddings': False, 'd_ff': 96},
  'scan_layers': {'scan_layers': True, 'n_layers': 3},
  'sinusoidal': {'pos_emb': 'sinusoidal'},
  # muP's attention and readout multipliers and CompleteP's branch multiplier, folded into weights.
  'mup_completep': {
    'parametrization': 'mup',
    'base_d_model': 16,
    'mup_output_multiplier': 3.0,
    'depth_scaling': 'completep',
    'base_n_layers': 1,
  },
  'bfloat16_params': {'param_dtype': 'bfloat16', 'layer_norm_eps': 1e-3},
}


@pytest.mark.parametrize('variant', sorted(PRE_LN))
def test_a_pre_ln_run_is_gpt2_with_the_same_logits(tmp_path, variant):
  workdir = _make_workdir(tmp_path / 'run', **PRE_LN[variant])
  line = hf_export.export(workdir, str(tmp_path / 'hf'))
  assert line.startswith(f'wrote {tmp_path / "hf"}: GPT2LMHeadModel')
  assert sorted(os.listdir(tmp_path / 'hf')) == [
    'config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
  ]
  _assert_same_logits(workdir, str(tmp_path / 'hf'), 'GPT2LMHeadModel')


# GPT-1 in transformers is gptjax's post-LN block exactly (no final LayerNorm, biases, tanh GELU);
# its MLP is 4 * d_model wide, which tiny.py's d_ff=128 at d_model 32 is.
@pytest.mark.parametrize(
  'model', [{}, {'tie_embeddings': False, 'pos_emb': 'sinusoidal', 'scan_layers': True}]
)
def test_a_post_ln_run_is_openai_gpt_with_the_same_logits(tmp_path, model):
  workdir = _make_workdir(tmp_path / 'run', norm='post', **model)
  hf_export.export(workdir, str(tmp_path / 'hf'))
  _assert_same_logits(workdir, str(tmp_path / 'hf'), 'OpenAIGPTLMHeadModel')


@pytest.mark.parametrize(
  'model, message',
  [
    ({'pos_emb': 'rotary'}, "model.pos_emb='rotary': GPT2LMHeadModel adds a learned position"),
    ({'norm': 'post', 'd_ff': 96}, "model.d_ff=96: a model.norm='post' model is exported as"),
  ],
)
def test_what_the_classes_cannot_express_is_refused_before_writing(tmp_path, model, message):
  workdir = _make_workdir(tmp_path / 'run', **model)
  with pytest.raises(UserError, match='^cannot export to Hugging Face: ') as raised:
    hf_export.export(workdir, str(tmp_path / 'hf'))
  assert message in str(raised.value)
  assert sorted(os.listdir(tmp_path)) == ['run']


def test_another_architecture_is_refused(tmp_path):
  os.makedirs(tmp_path / 'bert')
  config = tiny.get_config()
  config.model.architecture = 'bert'
  workdir_lib.save_config(config, str(tmp_path / 'bert'))
  with pytest.raises(UserError, match='model.architecture=bert run; to_hf exports GPT'):
    hf_export.export(str(tmp_path / 'bert'), str(tmp_path / 'hf'))
  assert not os.path.exists(tmp_path / 'hf')


def test_an_existing_out_is_refused_unless_empty(tmp_path):
  workdir = _make_workdir(tmp_path / 'run')
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'notes.txt').write_text('keep me')
  with pytest.raises(UserError, match='exists and is not empty'):
    hf_export.export(workdir, str(tmp_path / 'full'))
  assert os.listdir(tmp_path / 'full') == ['notes.txt']
  (tmp_path / 'file').write_text('x')
  with pytest.raises(UserError, match='exists and is not a directory'):
    hf_export.export(workdir, str(tmp_path / 'file'))
  (tmp_path / 'empty').mkdir()
  hf_export.export(workdir, str(tmp_path / 'empty'))
  assert 'model.safetensors' in os.listdir(tmp_path / 'empty')
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]  # no partial directory left


@pytest.fixture(scope='module')
def tokenizers_of_every_kind(tmp_path_factory):
  texts = [text for _, text in list(sources.stdlib_documents())[:40]]
  gpt2_dir = tmp_path_factory.mktemp('gpt2')
  write_gpt2_tokenizer_files(gpt2_dir, texts, vocab_size=500)
  return {
    'byte': tokenizer_lib.ByteTokenizer(),
    'char': tokenizer_lib.CharTokenizer.train(texts, 300),
    'sentencepiece': tokenizer_lib.SentencePieceTokenizer.train(texts, 600),
    'gpt2': tokenizer_lib.GPT2Tokenizer.from_files(
      os.path.join(gpt2_dir, 'vocab.json'), os.path.join(gpt2_dir, 'merges.txt'), 500
    ),
  }


@pytest.mark.parametrize('kind', ['byte', 'char', 'sentencepiece', 'gpt2'])
def test_auto_tokenizer_encodes_and_decodes_as_gptjax(tmp_path, tokenizers_of_every_kind, kind):
  ours = tokenizers_of_every_kind[kind]
  for name, data in hf_tokenizers.tokenizer_files(ours, 64).items():
    (tmp_path / name).write_bytes(data)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  unseen = [text for _, text in list(sources.stdlib_documents())[200:203]]

  def same(text: str) -> None:
    ids = ours.encode(text)
    assert theirs(text)['input_ids'] == ids
    assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids) == text

  for text in TEXTS + unseen:
    same(text)
  hypothesis.settings(max_examples=100, deadline=None)(
    hypothesis.given(st.text(st.characters(blacklist_categories=('Cs',)), max_size=100))(same)
  )()
  assert theirs.bos_token_id == ours.bos_id and theirs.eos_token_id == ours.eos_id
  assert theirs.pad_token_id == ours.pad_id
  markers = [ours.start_id, *ours.encode('a b'), ours.delim_id, ours.extract_id, ours.eos_id]
  assert theirs.decode(markers, skip_special_tokens=True) == 'a b'


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.convert', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_to_hf_writes_a_directory_that_transformers_loads(tmp_path):
  tokenizer = tokenizer_lib.SentencePieceTokenizer.train(
    [text for _, text in list(sources.stdlib_documents())[:20]], 400
  )
  workdir = _make_workdir(tmp_path / 'run', tokenizer=tokenizer)
  out = str(tmp_path / 'hf')
  result = _cli('to_hf', '--workdir', workdir, '--out', out)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'wrote {out}: GPT2LMHeadModel, 2 layers')
  _assert_same_logits(workdir, out, 'GPT2LMHeadModel')
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  for text in TEXTS:
    assert theirs(text)['input_ids'] == tokenizer.encode(text)

  again = _cli('to_hf', '--workdir', workdir, '--out', out)
  assert again.returncode == 1 and again.stderr.startswith('error: --out ')
  assert again.stderr.count('\n') == 1 and 'not empty' in again.stderr
  missing = _cli('to_hf', '--workdir', workdir)
  assert missing.returncode == 2 and 'to_hf needs --out' in missing.stderr


@pytest.mark.slow
def test_an_unsupported_feature_is_one_error_line_and_writes_nothing(tmp_path):
  workdir = _make_workdir(tmp_path / 'run', pos_emb='rotary')
  result = _cli('to_hf', '--workdir', workdir, '--out', str(tmp_path / 'hf'))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.count('\n') == 1
  assert result.stderr.startswith('error: cannot export to Hugging Face: ')
  assert 'rotary' in result.stderr
  assert sorted(os.listdir(tmp_path)) == ['run']
