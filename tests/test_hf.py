"""Hugging Face GPT-2 checkpoints: logits against transformers, the tokenizer, convert -> sample."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_gpt2_tokenizer_files

from gptjax.data import sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import hf

torch = pytest.importorskip('torch', reason='the [hf] extra is not installed')
transformers = pytest.importorskip('transformers', reason='the [hf] extra is not installed')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 400


def _random_gpt2(
  directory, seed: int = 0, torch_bin: bool = False, sharded: bool = False, **config
) -> 'torch.nn.Module':
  """A small GPT-2 saved by transformers, every weight random (LayerNorm scales and biases too,
  so that a swapped or transposed tensor shows)."""
  torch.manual_seed(seed)
  hf_config = transformers.GPT2Config(
    **{
      'n_layer': 2,
      'n_embd': 64,
      'n_head': 4,
      'n_positions': 32,
      'vocab_size': VOCAB,
      'bos_token_id': 0,
      'eos_token_id': 0,
      **config,
    }
  )
  model = transformers.GPT2LMHeadModel(hf_config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(1.0 if name.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight')) else 0.0, 0.2)
  if torch_bin:
    hf_config.save_pretrained(directory)
    torch.save(model.state_dict(), os.path.join(directory, 'pytorch_model.bin'))
  else:  # sharded: model-0000N-of-0000M.safetensors and model.safetensors.index.json
    model.save_pretrained(directory, max_shard_size='100KB' if sharded else '5GB')
  return model


@pytest.mark.parametrize('config', [{}, {'tie_word_embeddings': False, 'n_inner': 96}])
@pytest.mark.parametrize('file_format', ['safetensors', 'sharded', 'torch_bin'])
def test_logits_match_transformers(tmp_path, config, file_format):
  reference = _random_gpt2(
    tmp_path, torch_bin=file_format == 'torch_bin', sharded=file_format == 'sharded', **config
  )
  if file_format == 'sharded':
    assert os.path.exists(tmp_path / 'model.safetensors.index.json')
  model, params = hf.load_gpt2(str(tmp_path))
  assert model.config.d_ff == config.get('n_inner', 256)
  assert ('lm_head' in params) == (not config.get('tie_word_embeddings', True))
  ids_BxL = np.random.default_rng(0).integers(0, VOCAB, (3, 32))
  with torch.no_grad():
    expected = reference(torch.tensor(ids_BxL)).logits.numpy()
  logits = model.apply({'params': params}, ids_BxL)
  assert logits.shape == (3, 32, VOCAB)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_what_gptjax_cannot_run_is_a_user_error(tmp_path):
  _random_gpt2(tmp_path, activation_function='relu')
  with pytest.raises(UserError, match='activation_function'):
    hf.load_gpt2(str(tmp_path))
  _random_gpt2(tmp_path)
  with open(tmp_path / 'config.json') as f:
    config = json.load(f)
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump({**config, 'n_embd': 32}, f)
  with pytest.raises(UserError, match='shape'):
    hf.load_gpt2(str(tmp_path))
  os.remove(tmp_path / 'model.safetensors')
  with pytest.raises(UserError, match='model.safetensors'):
    hf.load_gpt2(str(tmp_path))


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  """A Hugging Face GPT-2 directory: random weights and a small trained tokenizer."""
  directory = tmp_path_factory.mktemp('hf_gpt2')
  write_gpt2_tokenizer_files(
    directory, [text for _, text in list(sources.stdlib_documents())[:30]], vocab_size=VOCAB
  )
  _random_gpt2(directory, n_positions=64)
  return str(directory)


def test_tokenizer_matches_transformers(hf_dir):
  ours = tokenizer_lib.GPT2Tokenizer.from_files(
    os.path.join(hf_dir, 'vocab.json'), os.path.join(hf_dir, 'merges.txt'), VOCAB
  )
  theirs = transformers.GPT2Tokenizer.from_pretrained(hf_dir)
  for text in ['def fib(n):\n    return n', "  it's 3.14 naïve café 你好 🐍\r\n\t", 'x' * 300]:
    assert ours.encode(text) == theirs(text)['input_ids']
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs(text)['input_ids']) == text


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', module, *args], cwd=REPO, capture_output=True, text=True, timeout=300
  )


@pytest.mark.slow
def test_convert_then_sample_continues_the_prompt_as_transformers_does(hf_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  converted = _cli('gptjax.convert', 'hf_gpt2', '--hf_dir', hf_dir, '--workdir', workdir)
  assert converted.returncode == 0, converted.stderr
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert config['tokenizer'] == {'kind': 'gpt2', 'vocab_size': VOCAB + 3}
  assert config['model']['n_ctx'] == 64 and config['model']['d_model'] == 64
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['0', 'fingerprints.json']

  prompt = 'def fib('
  sampled = _cli(
    'gptjax.sample',
    '--workdir',
    workdir,
    '--prompt',
    prompt,
    '--max_new_tokens',
    '12',
    '--temperature',
    '0',
  )
  assert sampled.returncode == 0, sampled.stderr
  tokenizer = tokenizer_lib.GPT2Tokenizer.from_files(
    os.path.join(hf_dir, 'vocab.json'), os.path.join(hf_dir, 'merges.txt'), VOCAB
  )
  reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
  ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
  with torch.no_grad():
    greedy = reference.generate(
      torch.tensor([ids]),
      max_new_tokens=12,
      do_sample=False,
      eos_token_id=tokenizer.eos_id,
      pad_token_id=tokenizer.eos_id,
    )
  new_ids = greedy[0, len(ids) :].tolist()
  new_ids = new_ids[: new_ids.index(tokenizer.eos_id)] if tokenizer.eos_id in new_ids else new_ids
  assert sampled.stdout == prompt + tokenizer.decode(new_ids) + '\n'

  again = _cli('gptjax.convert', 'hf_gpt2', '--hf_dir', hf_dir, '--workdir', workdir)
  assert again.returncode == 1 and again.stderr.startswith('error: ') and 'already' in again.stderr


@pytest.mark.slow
def test_convert_without_tokenizer_files_is_one_line(tmp_path):
  _random_gpt2(tmp_path / 'hf')
  result = _cli(
    'gptjax.convert',
    'hf_gpt2',
    '--hf_dir',
    str(tmp_path / 'hf'),
    '--workdir',
    str(tmp_path / 'run'),
  )
  assert result.returncode == 1
  assert result.stderr.count('\n') == 1 and 'vocab.json' in result.stderr
  assert not os.path.exists(tmp_path / 'run')


def _damage_hf(directory, case: str) -> None:
  config_path, weights = directory / 'config.json', directory / 'model.safetensors'
  if case == 'garbage_config':
    config_path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
  elif case == 'config_not_an_object':
    config_path.write_text('[1, 2]')
  elif case == 'heads_do_not_divide':
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, 'n_head': 5}))
  elif case == 'width_not_a_number':
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, 'n_embd': '64'}))
  elif case == 'truncated_weights':
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
  elif case == 'garbage_weights':
    weights.write_bytes(b'\xff' * 1000)


HF_DAMAGE = {
  'garbage_config': 'config.json is not a readable Hugging Face model config',
  'config_not_an_object': 'config.json is not a readable Hugging Face model config',
  'heads_do_not_divide': 'config.json has n_head=5, which does not divide n_embd=64',
  'width_not_a_number': "config.json has n_embd='64'; it must be a positive integer",
  'truncated_weights': 'model.safetensors is not a readable checkpoint file',
  'garbage_weights': 'model.safetensors is not a readable checkpoint file',
}


@pytest.mark.parametrize('case', sorted(HF_DAMAGE))
def test_a_damaged_hugging_face_directory_is_one_user_error_naming_the_file(tmp_path, case):
  _random_gpt2(tmp_path)
  _damage_hf(tmp_path, case)
  with pytest.raises(UserError) as raised:
    hf.load_gpt2(str(tmp_path))
  assert str(tmp_path / HF_DAMAGE[case].split(' ')[0]) in str(raised.value)
  assert HF_DAMAGE[case] in str(raised.value) and '\n' not in str(raised.value)


@pytest.mark.slow
def test_convert_of_a_truncated_checkpoint_is_one_line_and_writes_nothing(hf_dir, tmp_path):
  import shutil

  damaged = tmp_path / 'hf'
  shutil.copytree(hf_dir, damaged)
  _damage_hf(damaged, 'truncated_weights')
  result = _cli(
    'gptjax.convert', 'hf_gpt2', '--hf_dir', str(damaged), '--workdir', str(tmp_path / 'run')
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
  assert result.stderr.splitlines() == [
    line for line in result.stderr.splitlines() if line.startswith('error: ')
  ]
  assert len(result.stderr.splitlines()) == 1 and 'model.safetensors' in result.stderr
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
