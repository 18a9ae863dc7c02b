"""Today's numerics against reference files made with the code before the package layout
(tests/fixtures/make_reference.py, run at commit a158794): GPT logits and gradients, a 60-step
tiny loss curve, and a workdir that code wrote, resumed by this code.

On a CPU with the same instruction-set extensions as the one that made the files (XLA's CPU code
depends on them) the results must be bitwise equal; elsewhere within float32 round-off.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.data import windows
from gptjax.models import gpt, registry
from gptjax.training import trainer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
with open(os.path.join(FIXTURES, 'reference.json')) as f:
  REFERENCE = json.load(f)


def _isa() -> list[str]:
  try:
    with open('/proc/cpuinfo') as f:
      flags = next(line for line in f if line.startswith('flags')).split(':')[1].split()
  except (OSError, StopIteration):
    return []
  return sorted(f for f in flags if f.startswith(('avx', 'amx', 'fma', 'sse4')))


BITWISE = jax.default_backend() == 'cpu' and _isa() == REFERENCE['isa']


def _assert_same(actual, expected, rtol: float) -> None:
  if BITWISE:
    np.testing.assert_array_equal(actual, expected)
  else:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2)


def _tiny_config():
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  config.data.max_documents = 300
  return config


@pytest.mark.parametrize(
  'name, overrides',
  [
    ('pre', {}),
    ('post', {'norm': 'post', 'tie_embeddings': False}),
    ('pre_bf16', {'dtype': 'bfloat16'}),
  ],
)
def test_gpt_logits_and_gradients_match_the_reference(name, overrides):
  reference = np.load(os.path.join(FIXTURES, 'gpt_reference.npz'))
  ids_BxL1 = jax.random.randint(jax.random.PRNGKey(1), (2, 17), 0, 512)
  config = tiny.get_config()
  config.model.update(overrides)
  model = registry.build(configuration.model_config(config, 512))
  params = registry.init_params(model, jax.random.PRNGKey(0))
  _assert_same(
    np.asarray(model.apply({'params': params}, ids_BxL1[:, :-1])),
    reference[f'{name}/logits'],
    rtol=1e-5,
  )
  grads = jax.grad(lambda p: gpt.next_token_cross_entropy(model, p, ids_BxL1))(params)
  flat = {
    f'{name}/grad/' + '/'.join(k.key for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]
  }
  assert sorted(flat) == sorted(k for k in reference.files if k.startswith(f'{name}/grad/'))
  for key, leaf in flat.items():
    _assert_same(np.asarray(leaf), reference[key], rtol=1e-4)


@pytest.fixture
def first_windows(monkeypatch):
  """Evaluation on the windows the reference code read: the first ones of the validation split,
  consecutive (evaluation now spreads them over the split; the numerics are what is compared)."""

  def first(n_items, n_batches, global_batch):
    items = np.arange(n_batches * global_batch) % n_items
    return [items[b * global_batch : (b + 1) * global_batch] for b in range(n_batches)]

  monkeypatch.setattr(windows, 'evaluation_items', first)


def _logged(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  keep = ('step', 'train_loss', 'grad_norm', 'lr', 'eval_loss')  # eval_loss_se is new
  return [{k: row[k] for k in keep if k in row} for row in rows]


def _assert_curves_equal(got: list[dict], expected: list[dict]) -> None:
  assert [sorted(r) for r in got] == [sorted(r) for r in expected]
  for row_got, row_expected in zip(got, expected):
    for key in row_expected:
      _assert_same(np.float64(row_got[key]), np.float64(row_expected[key]), rtol=1e-3)


@pytest.mark.slow
def test_a_60_step_tiny_run_gives_the_reference_loss_curve(tmp_path, first_windows):
  trainer.train_and_evaluate(_tiny_config(), str(tmp_path), show_progress=False)
  _assert_curves_equal(_logged(str(tmp_path)), REFERENCE['tiny60'])


@pytest.mark.slow
def test_a_workdir_written_before_the_layout_resumes_on_the_same_curve(tmp_path, first_windows):
  workdir = str(tmp_path / 'old')
  shutil.copytree(os.path.join(FIXTURES, 'workdir_a158794'), workdir)
  config = _tiny_config()
  config.data.max_documents = 8
  config.train.update(steps=20, eval_every=10, checkpoint_every=10, log_every=1)
  trainer.train_and_evaluate(config, workdir, show_progress=False)
  _assert_curves_equal(_logged(workdir), REFERENCE['resume20'])
