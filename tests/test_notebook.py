"""experiments/colab_tpu.ipynb is a valid notebook whose code runs (on a CPU, tiny config)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu_in_smoke_mode(tmp_path):
  with open(os.path.join(REPO, 'experiments', 'colab_tpu.ipynb')) as f:
    notebook = json.load(f)
  assert notebook['nbformat'] == 4 and notebook['metadata']['accelerator'] == 'TPU'
  code = [cell for cell in notebook['cells'] if cell['cell_type'] == 'code']
  colab_only = [c for c in code if 'colab-only' in c['metadata'].get('tags', [])]
  assert len(colab_only) == 1 and 'pip install -q -r requirements.txt' in ''.join(
    colab_only[0]['source']
  )
  source = '\n\n'.join(''.join(c['source']) for c in code if c not in colab_only)
  result = subprocess.run(
    [sys.executable, '-c', source],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, 'GPTJAX_NOTEBOOK_SMOKE': '1', 'GPTJAX_NOTEBOOK_WORK': str(tmp_path)},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '[CpuDevice(id=0)]' in result.stdout
  assert 'eval_loss' in result.stdout and 'MFU' in result.stdout
  assert '# Scaling-law report' in result.stdout
  assert os.path.exists(tmp_path / 'sweep_report' / 'report.md')
