import json
import os
import subprocess
import sys

import ml_collections
import pytest

from gptjax import configuration
from gptjax.configs import default, gpt1, gpt2_small, tiny
from gptjax.errors import UserError
from gptjax.training import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('module', [default, tiny, gpt1, gpt2_small])
def test_shipped_configs_are_valid(module):
  configuration.validate(module.get_config(), device_count=1)


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('model.n_heads', 5, 'not divisible by model.n_heads'),
    ('model.norm', 'sandwich', "model.norm='sandwich'; choose one of pre, post"),
    ('model.n_layers', 0, 'model.n_layers=0 must be positive'),
    ('train.seq_len', 1000, 'longer than model.n_ctx'),
    ('train.global_batch_size', 12, 'not divisible by the 8 devices'),
    ('train.grad_accum_steps', 3, 'not divisible by train.grad_accum_steps=3'),
    ('train.warmup_steps', 10_000, 'exceeds train.steps'),
    ('tokenizer.vocab_size', 100, 'too small'),
    ('data.val_fraction', 1.5, 'between 0 and 1'),
    ('data.source', 'text_files', 'needs data.text_files'),
  ],
)
def test_inconsistent_configs_are_rejected_with_the_field_named(field, value, message):
  config = default.get_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(UserError, match=message.replace('(', r'\(').replace(')', r'\)')):
    configuration.validate(config, device_count=8 if 'batch' in field else 1)


def test_attention_dropout_needs_the_einsum_attention():
  config = default.get_config()
  config.model.update(attn_dropout=0.1, attention_impl='xla')
  with pytest.raises(UserError, match='needs model.attention_impl=einsum'):
    configuration.validate(config, device_count=1)


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.main', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.slow
@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.model.n_layerz=2', 'unknown config field'),
    ('--config.model.n_layers=two', 'invalid literal for int()'),
    ('--config.model.n_heads=3', 'not divisible by model.n_heads'),
    ('--config.train.sharding=zero3', 'train.sharding'),
    ('--no_such_flag=1', "Unknown command line flag 'no_such_flag'"),
  ],
)
def test_cli_reports_bad_input_in_one_line(override, message, tmp_path):
  result = _cli('--config', 'tiny', '--workdir', str(tmp_path / 'w'), override)
  assert result.returncode != 0
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_cli_reports_a_missing_config_file(tmp_path):
  result = _cli('--config', str(tmp_path / 'missing.py'), '--workdir', str(tmp_path / 'w'))
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'No such file' in result.stderr


def test_cudnn_attention_falls_back_to_xla_off_gpu(capsys):
  config = tiny.get_config()
  config.model.attention_impl = 'cudnn'
  assert configuration.model_config(config, 300).attention_impl == 'xla'
  assert "needs an NVIDIA GPU; using 'xla' on cpu" in capsys.readouterr().err


def test_a_config_saved_before_newer_fields_existed_still_loads_and_resumes(tmp_path):
  """config.json of a run from an earlier gptjax: remat as a bool, no scan_layers."""
  saved = default.get_config().to_dict()
  saved['model']['remat'] = False
  del saved['model']['scan_layers']
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(saved, f)
  workdir.check_config(default.get_config(), str(tmp_path))  # resuming with today's defaults
  old = ml_collections.ConfigDict(saved)
  assert configuration.model_config(old, 4096).remat == 'none'
  old.model.remat = True
  assert configuration.model_config(old, 4096).remat == 'full'
  changed = default.get_config()
  changed.model.d_model = 256
  with pytest.raises(UserError, match='model.d_model 192 -> 256'):
    workdir.check_config(changed, str(tmp_path))


def test_a_config_json_written_before_fields_moved_reads_as_today(tmp_path):
  config = default.get_config()
  old = json.loads(config.to_json())
  old['model']['type_vocab_size'] = old['bert'].pop('type_vocab_size')
  old['train']['mlm_probability'] = old['bert'].pop('mlm_probability')
  old['model']['n_encoder_layers'] = old['encoder_decoder'].pop('n_encoder_layers')
  old['train']['source_len'] = old['encoder_decoder'].pop('source_len')
  old['train']['label_smoothing'] = old['encoder_decoder'].pop('label_smoothing')
  del old['bert'], old['encoder_decoder']
  del old['data']['train_subset']  # added later: a config without it trained on the first tokens
  assert configuration.upgrade(old) == json.loads(config.to_json())
  spread = json.loads(config.to_json())
  spread['data']['train_subset'] = 'spread'
  assert configuration.upgrade(spread) == spread
  assert configuration.upgrade(json.loads(config.to_json())) == json.loads(config.to_json())
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(old))
  assert configuration.read_config(str(path)).encoder_decoder.source_len == 128
  workdir.check_config(config, str(tmp_path))  # the same run: resuming it is allowed


def test_every_field_of_the_default_config_is_declared():
  flat = []
  for section, fields in json.loads(default.get_config().to_json()).items():
    flat += [f'{section}.{name}' for name in fields] if isinstance(fields, dict) else [section]
  assert sorted(flat) == sorted(configuration.FIELDS)


def test_nan_and_inf_are_refused_in_float_fields():
  for field in ('train.lr', 'model.init_std', 'train.b2', 'bert.mlm_probability'):
    for value in (float('nan'), float('inf')):
      config = default.get_config()
      section, name = field.split('.')
      config[section][name] = value
      with pytest.raises(UserError, match=f'{field}=.* must be finite'):
        configuration.validate(config, device_count=1)
