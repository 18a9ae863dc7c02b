"""experiments/accelerator_check.py on a CPU: the smoke run writes every section, and the search
for the largest batch steps past out-of-memory errors (which only a GPU would raise)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join('experiments', 'accelerator_check.py')


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
  out = tmp_path / 'check.json'
  result = subprocess.run(
    [sys.executable, SCRIPT, '--smoke', '--out', str(out)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['mode'] == 'smoke' and report['out'] == str(out)
  devices = report['devices']
  assert devices['backend'] == 'cpu' and devices['device_kind'] == 'cpu'
  assert devices['devices'] and all(d.startswith('cpu') for d in devices['devices'])
  assert devices['device_count'] == len(devices['devices']) and devices['jax_version']

  train = report['train']
  for scan in (False, True):
    entry = train[f'gpt2_small_scan_{scan}']
    assert 'error' not in entry and 'skipped' not in entry, entry
    assert entry['scan_layers'] is scan and entry['attention_impl'] == 'xla'
    assert entry['dtype'] == 'bfloat16' and entry['batch'] == 4 and entry['seq_len'] == 64
    assert math.isfinite(entry['tokens_per_s']) and entry['tokens_per_s'] > 0
    assert entry['step_ms'] > 0 and entry['compile_s'] > 0 and entry['mfu'] > 0
    assert math.isfinite(entry['final_loss']) and entry['attempts'] == []
  for scan in (False, True):  # medium runs, or says why not
    entry = train[f'gpt2_medium_scan_{scan}']
    assert entry.get('skipped', '').startswith('skipped: time budget') or entry['tokens_per_s'] > 0

  numerics = report['numerics']
  assert numerics['cudnn_vs_xla']['skipped'].startswith('skipped: no GPU')
  loss = numerics['bf16_vs_f32_loss']
  for dtype in ('float32', 'bfloat16'):
    assert all(math.isfinite(loss[dtype][name]) for name in ('train_loss', 'eval_loss'))
  assert 0 <= loss['relative_diff_train_loss'] < 0.05 and loss['within_tolerance'] is True

  for batch in (1, 8):
    entry = report['decode'][f'gpt2_small_batch_{batch}']
    assert 'error' not in entry, entry
    assert entry['batch_size'] == batch and entry['cached_tokens_per_s'] > 0
    assert entry['same_tokens'] is True
  assert report['stacking'] == {'skipped': 'skipped: stacking not implemented'}
  assert 'accelerator check: 1 x cpu' in result.stdout and 'stacking: skipped' in result.stdout


@pytest.mark.slow
def test_largest_batch_steps_past_out_of_memory():
  code = textwrap.dedent(
    """
    import importlib.util
    spec = importlib.util.spec_from_file_location('accelerator_check', %r)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    from gptjax.errors import UserError

    def run(batch):
      if batch == 64:
        raise UserError('out of memory compiling the train step (batch 64 ...)')
      if batch == 32:
        raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate')
      return {'batch': batch}

    fits = lambda batch: 'too big' if batch == 48 else None
    result = check.largest_batch(run, (64, 48, 32, 16, 8), fits)
    assert result['batch'] == 16, result
    assert [a['batch'] for a in result['attempts']] == [64, 48, 32], result
    assert result['attempts'][1] == {'batch': 48, 'not_tried': 'too big'}
    none = check.largest_batch(lambda b: run(64), (64,), lambda b: None)
    assert none['skipped'].startswith('skipped: no batch'), none
    try:
      check.largest_batch(lambda b: 1 / 0, (8,), lambda b: None)
    except ZeroDivisionError:
      print('ok')
    """
    % SCRIPT
  )
  result = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
  'args, message',
  [(['--out', '.'], 'is a directory'), (['--budget_s=-1'], 'budget_s'), (['extra'], 'expected')],
)
def test_bad_input_is_one_error_line(args, message):
  result = subprocess.run(
    [sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], result.stderr
