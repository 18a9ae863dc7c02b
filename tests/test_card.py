"""The scaling card (gptjax/scaling/card.py): Li et al.'s (2025) checklist filled in from a sweep's
rows and fits, and written by the report with no machine paths."""

import json
import math
import os

import pytest

from gptjax.errors import UserError
from gptjax.scaling import card, report, tuning, uncertainty
from gptjax.scaling.observations import observations

SIZES = (1_000, 4_000, 16_000)
LRS = (1e-3, 3e-3, 1e-2)
WARMUP = {1_000: 10, 4_000: 20, 16_000: 40}
BETA2 = {1_000: 0.95, 4_000: 0.95, 16_000: 0.98}
HEADINGS = (
  '## 1. Hypothesis',
  '## 2. The form fitted',
  '## 3. Definitions of N, D and C',
  '## 4. Hyperparameter policy',
  '## 5. Data and epochs',
  '## 6. Fitting method',
  '## 7. Uncertainty',
  '## 8. Hold-out test',
  '## 9. Ladder check',
)


def _rows() -> list[dict]:
  """An LR sweep at three sizes on 102,400 tokens drawn from 51,200 (2 epochs), the best LR 3e-3 at
  every size, and one run repeated under a second seed."""
  rows = []
  for n in SIZES:
    for lr in LRS:
      loss = (1e5 / n) ** 0.1 + 0.05 * math.log(lr / 3e-3) ** 2
      rows.append(_row(f'n{n}_lr{lr:g}', n, lr, loss, seed=0))
  rows.append(_row('n1000_lr0.003_seed1', 1_000, 3e-3, rows[1]['eval_loss'] + 0.004, seed=1))
  del rows[1]['N_compute']  # a row from before results had it (one the laws are fitted to)
  return rows


def _row(name: str, n: int, lr: float, loss: float, seed: int) -> dict:
  steps, batch, seq_len = 100, 8, 128
  d = steps * batch * seq_len
  return {
    'name': name,
    'N': n,
    'N_total': n + 262 * 16,
    'N_compute': n,
    'D': d,
    'unique_tokens': d // 2,
    'C': 6 * n * d,
    'C_convention': '6ND',
    'steps': steps,
    'train_loss': loss - 0.01,
    'eval_loss': loss,
    'eval_loss_se': 0.002,
    'best_eval_loss': loss,
    'tokens_per_s': 1e4,
    'wall_s': 1.0,
    'config': {
      'seed': seed,
      'model': {'d_model': n // 100, 'parametrization': 'mup', 'base_d_model': 10},
      'tokenizer': {'kind': 'byte', 'vocab_size': 262},
      'data': {'source': 'text_files', 'text_files': '/home/someone/corpus/*.txt'},
      'train': {
        'lr': lr,
        'warmup_steps': WARMUP[n],
        'b1': 0.9,
        'b2': BETA2[n],
        'global_batch_size': batch,
        'seq_len': seq_len,
        'weight_decay': 0.1,
        'schedule': 'cosine',
        'min_lr_ratio': 0.1,
        'steps': steps,
      },
    },
  }


def _write_sweep(root: str, rows: list[dict], hypothesis: str = '') -> None:
  os.makedirs(root)
  with open(os.path.join(root, 'results.jsonl'), 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
      os.makedirs(os.path.join(root, row['name']))
      with open(os.path.join(root, row['name'], 'metrics.jsonl'), 'w') as metrics:
        for step in (25, 50, 75, 100):
          loss = row['eval_loss'] + 0.3 * (100 - step) / 100
          metrics.write(json.dumps({'step': step, 'train_loss': loss - 0.01}) + '\n')
          metrics.write(json.dumps({'step': step, 'eval_loss': loss}) + '\n')
  if hypothesis:
    with open(os.path.join(root, 'hypothesis.md'), 'w') as f:
      f.write(hypothesis)


def test_the_card_states_the_checklist_from_the_rows():
  every_row = _rows()
  rows, _ = tuning.tuned_frontier(every_row, 'train.lr')
  assert [tuning.config_value(r, 'train.lr') for r in rows] == [3e-3] * 3
  fit = uncertainty.fit_with_intervals(
    observations(rows, loss_col='best_eval_loss'), 'kaplan_n', 'best_eval_loss', 20
  )
  holdout = [
    {'name': 'big', 'C': 1e12, 'loss': 2.0, 'predicted': 2.05, 'relative_error': 0.025},
  ]
  ladder = {
    'predicted_at': 'commit abc1234',
    'fit_budgets': [1e10, 4e10],
    'runs': [{'name': 'ladder_1e11', 'predicted': 2.5, 'actual': 2.6, 'relative_error': -0.0385}],
    'mean_abs_relative_error': 0.0385,
    'optimum': {'C': 1e11, 'N_opt': 12_345.0},
  }
  markdown = card.scaling_card(
    rows,
    [fit],
    20,
    tuning.seed_noise(every_row),
    study='lr_sweep',
    hypothesis='L(N) falls as a power law once each size has its best LR.',
    all_rows=every_row,
    tuned_field='train.lr',
    holdout=holdout,
    ladder=ladder,
  )
  for heading in HEADINGS:
    assert heading in markdown, heading
  lines = markdown.splitlines()
  policy = {
    line.split(' | ')[0][2:]: line
    for line in lines
    if line.startswith('| ') and ' x ' in line and line[2].isdigit()
  }
  assert set(policy) == {'1,000', '4,000', '16,000'}
  for n in SIZES:  # LR grid tried, the tuned winner, warmup, batch, beta2 of every size
    columns = [c.strip() for c in policy[f'{n:,}'].strip('|').split('|')]
    assert columns[2:] == [
      '0.001, 0.003, 0.01',
      '0.003',
      str(WARMUP[n]),
      '8 x 128 = 1,024',
      f'{BETA2[n]:g}',
    ], columns
  assert '| 1,000 | 4 |' in markdown  # the seed repeat counts as a run of its size
  for text in (
    '# Scaling card: lr_sweep',
    'L(N) falls as a power law once each size has its best LR.',
    'L(N) = (N_c / N)^alpha_N',
    "each run's best evaluation",
    'convention `6ND`',
    'N_compute**, the parameters C counts: not recorded',  # one row predates it
    'the laws are fitted to the best run of every (N, D) over the train.lr values tried',
    '**Warmup**: 10 to 40 steps (10,240 to 40,960 tokens)',
    '**Batch**: 1,024 tokens per step',
    'beta2 0.95, 0.98',
    'weight decay 0.1',
    'cosine: linear warmup from 0 to lr, then cosine decay to min_lr_ratio 0.1',
    'mup (base width 10)',
    '**Tokenizer**: byte, vocabulary 262',
    '**Unique training tokens**: 51,200',
    '**Epochs** (D / unique tokens): at most 2 ',
    'saw their data more than once',
    'least squares of log L on log x',
    '95% percentile intervals of 20 refits',
    '| kaplan_n | alpha_N |',
    'median standard deviation of 0.0028 nats',  # 0.004 / sqrt(2)
    'standard error of the final eval loss over its batches is 0.002 nats',
    '| big | 1e+12 | 2.0000 | 2.0500 | +2.50% |',
    'Mean absolute relative error: 2.50%.',
    '**Predicted**: commit abc1234',
    'C = 1e+10, 4e+10',
    'N_opt 1.2345e+04',
    '| ladder_1e11 | 2.5000 | 2.6000 | -3.85% |',
  ):
    assert text in markdown, text
  assert '/home/someone' not in markdown  # the data path is a machine path: not printed


def test_the_card_says_what_is_missing():
  rows = _rows()
  markdown = card.scaling_card(rows, [], 0, {})
  for heading in HEADINGS:
    assert heading in markdown, heading
  for text in (
    'Not stated',
    'No law was fitted',
    'Bootstrap: none',
    'Seed noise**: not measured',
    'Not run: there is no Approach 3 fit',
    'Ladder check\n\nNot run',
  ):
    assert text in markdown, text
  fits = card.scaling_card(rows, [], 0, {}, holdout='after holding out 3 run(s): too few runs')
  assert 'Not possible: after holding out 3 run(s): too few runs' in fits


def test_the_report_writes_the_card_without_machine_paths(tmp_path):
  root = str(tmp_path / 'lr_sweep')
  _write_sweep(root, _rows(), hypothesis='Each size has an LR optimum inside the grid.\n')
  out = str(tmp_path / 'out')
  report.write_report(root, out, bootstrap_k=5, tuned_field='train.lr')
  for name in ('report.md', 'card.md'):
    with open(os.path.join(out, name)) as f:
      text = f.read()
    assert str(tmp_path) not in text and os.path.abspath(root) not in text, name
    assert 'lr_sweep/results.jsonl' in text, name
  with open(os.path.join(out, 'card.md')) as f:
    markdown = f.read()
  assert 'Each size has an LR optimum inside the grid.' in markdown
  assert '0.001, 0.003, 0.01' in markdown and '[report.md](report.md)' in markdown
  with open(os.path.join(out, 'training_curves.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # Written into the sweep's own directory (the default), the results file is beside the card.
  report.write_report(root, root, bootstrap_k=0)
  with open(os.path.join(root, 'card.md')) as f:
    markdown = f.read()
  assert '(`results.jsonl`, 10 runs trained)' in markdown and str(tmp_path) not in markdown
  assert card.study_paths(root, root) == ('lr_sweep', 'results.jsonl')
  assert card.study_paths(root, os.path.join(root, 'report')) == ('lr_sweep', '../results.jsonl')
  assert card.study_paths(root, str(tmp_path)) == ('lr_sweep', 'lr_sweep/results.jsonl')


def test_the_report_fits_the_n_column_it_is_given_and_carries_the_ladder_check(tmp_path):
  root = str(tmp_path / 'study')
  rows = _rows()
  for row in rows:
    row['N_compute'] = 2 * row['N']  # as if C counted the head
  _write_sweep(root, rows)
  check = {
    'predicted_at': '2026-12-01T15:00:00+00:00',
    'runs': [{'name': 'n4000', 'predicted': 2.0, 'actual': 2.02, 'relative_error': -0.0099}],
    'mean_abs_relative_error': 0.0099,
  }
  with open(os.path.join(root, 'ladder_check.json'), 'w') as f:
    json.dump(check, f)
  report.write_report(root, root, bootstrap_k=0, tuned_field='train.lr', n_col='N_compute')
  with open(os.path.join(root, 'card.md')) as f:
    markdown = f.read()
  assert 'The fits take N = N_compute.' in markdown
  assert '2026-12-01T15:00:00+00:00' in markdown and 'n4000' in markdown
  with open(os.path.join(root, 'report.md')) as f:
    text = f.read()
  assert 'parameters C counts' in text and f'{2 * SIZES[-1]:,}' in text
  assert '### Ladder check' in text and '0.99%' in text
  with open(os.path.join(root, 'ladder.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(UserError, match='n_col'):
    report.write_report(root, root, bootstrap_k=0, n_col='params')
