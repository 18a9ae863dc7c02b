"""python -m gptjax.bench: what it reports and how it fails."""

import json
import math
import os
import subprocess
import sys

import pytest

from gptjax import configuration
from gptjax.configs import bert_tiny, tiny, transformer_tiny
from gptjax.models import accounting
from gptjax.models.config import ModelConfig
from gptjax.training import benchmark, step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args):
  return subprocess.run(
    [sys.executable, '-m', 'gptjax.bench', '--config', 'tiny', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_train_mode_json_reports_the_step_and_its_flops():
  result = _bench('--shape', '2,2,32,32,4,300', '--steps', '3', '--warmup', '1', '--json')
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  config = tiny.get_config()
  benchmark.apply_shape(config, '2,2,32,32,4,300')
  model_config = configuration.model_config(config, 300)
  assert report['flops_per_token'] == accounting.flops_per_token(model_config, 32)
  assert report['tokens_per_s'] == pytest.approx(4 * 32 / (report['step_ms'] / 1e3))
  assert report['mfu'] == pytest.approx(report['flops_per_s'] / report['peak_flops_per_s'])
  assert report['mfu'] > 0
  assert report['step_ms_min'] <= report['step_ms'] <= report['step_ms_max']
  assert report['compile_s'] > 0 and report['peak_source'].startswith('measured float32 matmul')
  assert (report['n_layers'], report['d_model'], report['batch'], report['vocab']) == (
    2,
    32,
    4,
    300,
  )


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_memory_estimate_is_close_to_xlas_count(dtype):
  # Activations dominate at this shape; in bfloat16 they stay float32 between the products, so
  # an estimate that halved them (it did) is off by a third.
  config = tiny.get_config()
  benchmark.apply_shape(config, '2,2,64,64,16,512')
  config.model.dtype = dtype
  report = benchmark.bench_train(config, steps=1, warmup=0)
  assert 0.8 < report['memory_estimate_mib'] / report['memory_mib'] < 1.25


def test_the_activation_estimate_counts_what_remat_keeps():
  # 4 blocks, 2 sequences of 64 tokens, d_model 64, 2 heads: one block's activations are
  # 128 * 64 * (34 + 5 * 2 * 64 / 64) / 2 = 180,224 float32 elements (Korthikanti et al.).
  estimates = {
    remat: accounting.memory_estimate(
      ModelConfig(
        vocab_size=512, n_ctx=64, n_layers=4, n_heads=2, d_model=64, d_ff=256, remat=remat
      ),
      micro_batch=2,
      seq_len=64,
    )
    for remat in ('none', 'full', 'dots_saveable')
  }
  everything, kept = 180_224, {'none': 180_224, 'full': 128 * 64, 'dots_saveable': 128 * 832}
  loss = estimates['none']['activations'] - 4 * everything * 4  # the logits, whatever remat does
  assert loss > 0
  for remat, estimate in estimates.items():
    # The other 3 blocks hold what remat keeps, the one in its backward pass everything.
    assert estimate['activations'] == (3 * kept[remat] + everything) * 4 + loss
    assert {k: v for k, v in estimate.items() if k != 'activations'} == {
      k: v for k, v in estimates['none'].items() if k != 'activations'
    }
  blocks = {remat: estimates[remat]['activations'] - loss for remat in estimates}
  # 'full' keeps each block's input, 1/22 of its activations, so 4 blocks cost about 1 + 3/22.
  assert blocks['none'] / blocks['full'] == pytest.approx(4 / (1 + 3 / 22))
  assert blocks['full'] < blocks['dots_saveable'] < blocks['none']


def _tiny_train():
  config = tiny.get_config()
  return configuration.model_config(config, 300), config.train


def test_the_memory_warning_names_what_shrinks_the_estimate():
  model_config, train = _tiny_train()
  estimate = step.memory_estimate(model_config, train)
  total = sum(estimate.values())
  warning = step.memory_warning(estimate, model_config, train, total // 2)
  assert '\n' not in warning and warning.startswith('warning: ')
  for field in (
    'train.global_batch_size',
    'train.grad_accum_steps',
    'model.remat',
    'train.seq_len',
    'model.dtype',
    'train.sharding',
  ):
    assert field in warning
  assert step.memory_warning(estimate, model_config, train, total) is None  # fits
  assert step.memory_warning(estimate, model_config, train, None) is None  # unknown (CPU)


def test_device_memory_is_bytes_limit_where_the_device_reports_it(monkeypatch):
  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  for stats, expected in [({'bytes_limit': 2**30, 'bytes_in_use': 0}, 2**30), (None, None)]:
    monkeypatch.setattr(step.jax, 'local_devices', lambda stats=stats: [Device(stats)])
    assert step.device_memory_bytes() == expected


@pytest.mark.parametrize('module', [bert_tiny, transformer_tiny])
def test_train_mode_times_every_architecture(module):
  config = module.get_config()
  benchmark.apply_shape(config, '1,2,32,32,4,300')
  config.encoder_decoder.n_encoder_layers = min(config.encoder_decoder.n_encoder_layers, 1)
  config.encoder_decoder.source_len = 16
  report = benchmark.bench_train(config, steps=2, warmup=1)
  assert report['architecture'] == config.model.architecture and report['tokens_per_s'] > 0
  # Random tokens before any learning: about the uniform distribution's loss.
  assert report['final_loss'] == pytest.approx(math.log(report['vocab']), rel=0.15)


@pytest.mark.slow
def test_decode_mode_compares_cached_and_uncached_decoding():
  result = _bench(
    '--mode', 'decode', '--new_tokens', '8', '--prompt_len', '4', '--decode_batch', '2', '--json'
  )
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  assert report['same_tokens'] and report['batch_size'] == 2 and report['new_tokens'] == 8
  assert report['speedup'] == pytest.approx(
    report['cached_tokens_per_s'] / report['uncached_tokens_per_s']
  )


@pytest.mark.slow
def test_bad_shape_and_config_are_one_line_errors():
  for args, message in (
    (['--shape', '2,2,32'], 'expected six integers'),
    (['--shape', '2,3,32,32,4,300'], 'not divisible by model.n_heads'),
    (['--config.model.bogus=1'], 'unknown config field'),
  ):
    result = _bench(*args)
    assert result.returncode != 0
    assert result.stderr.strip().count('\n') == 0 and message in result.stderr, result.stderr
