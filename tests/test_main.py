"""The command a user runs: python -m gptjax.main --config ... --workdir ..."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(workdir, corpus_glob, *overrides):
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'gptjax.main',
      '--config',
      'tiny',
      '--workdir',
      str(workdir),
      '--config.data.source=text_files',
      f'--config.data.text_files={corpus_glob}',
      '--config.train.steps=20',
      '--config.train.warmup_steps=5',
      *overrides,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_main_trains_evaluates_checkpoints_samples_and_resumes(corpus_glob, tmp_path):
  first = _main(tmp_path, corpus_glob)
  assert first.returncode == 0, first.stderr
  assert 'vs unigram entropy' in first.stdout and '--- sample ---\ndef ' in first.stdout
  with open(tmp_path / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert {'train_loss', 'tokens_per_s', 'mfu', 'lr', 'grad_norm', 'skipped_steps'} <= set(rows[0])
  assert rows[-1]['step'] == 20 and {'eval_loss', 'eval_ppl', 'eval_bpb'} <= set(rows[-1])
  assert any(
    name.startswith('events.out.tfevents') for name in os.listdir(tmp_path / 'tensorboard')
  )
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['20', 'fingerprints.json']
  for name in (
    'tokenizer.model',
    'config.json',
    'data/train.bin',
    'data/val.bin',
    'data/meta.json',
  ):
    assert os.path.exists(tmp_path / name), name

  # The same command again finds the finished run: it trains no more steps and reports the model.
  again = _main(tmp_path, corpus_glob)
  assert again.returncode == 0, again.stderr
  with open(tmp_path / 'metrics.jsonl') as f:
    assert len(f.readlines()) == len(rows)
  final_eval = lambda out: [line for line in out.splitlines() if line.startswith('eval loss')]
  assert final_eval(again.stdout) == final_eval(first.stdout)
