"""Garbage in each file of a trained workdir, in turn: every command that reads the file stops with
one UserError naming it (an `error:` line on the command line), or warns and falls back to what is
still good; nothing good is moved or deleted, and with the original file back the run continues
from where it was."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gptjax import configuration
from gptjax.configs import tiny
from gptjax.data import tokenizers
from gptjax.errors import UserError
from gptjax.models import registry
from gptjax.training import checkpoint, sharding, trainer
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import init_state, load_run

# Each case copies a trained workdir and trains or restores it: slow by nature.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 20  # the trained workdir's run: checkpoints 10 and 20
NEWEST = f'checkpoints/{STEPS}'
# What a run appends to as it goes: not compared before and after.
WRITTEN_BY_RUNS = ('.lock', 'metrics.jsonl', 'tensorboard')


def _config(corpus_glob: str, steps: int = STEPS):
  """tiny on the char tokenizer (so the workdir has a tokenizer file) and a generated corpus."""
  config = tiny.get_config()
  config.tokenizer.kind, config.tokenizer.vocab_size = 'char', 300
  config.sample.max_new_tokens = 0
  config.data.source, config.data.text_files = 'text_files', corpus_glob
  config.train.steps, config.train.checkpoint_every = steps, 10
  config.train.log_every, config.train.eval_every = 1, 20  # log_every=1: the logged steps say
  return config  # where a resumed run started


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(a workdir trained to STEPS, its config, every checkpoint's arrays by step, the abstract
  state and shardings training restores into)."""
  from conftest import write_corpus

  base = tmp_path_factory.mktemp('workdir_files')
  config = _config(write_corpus(base / 'corpus'))
  workdir = str(base / 'trained')
  trainer.train_and_evaluate(config, workdir, show_progress=False)
  saved = {}
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  for step in mngr.all_steps():
    saved[step] = jax.tree.map(np.asarray, mngr.restore(step, args=ocp.args.StandardRestore()))
  mngr.close()
  assert sorted(saved) == [10, STEPS]
  model = registry.build(configuration.model_config(config, config.tokenizer.vocab_size), 0)
  abstract = jax.eval_shape(lambda: init_state(model, make_optimizer(config.train), config.seed))
  shardings = sharding.state_shardings(abstract, sharding.make_mesh(), fsdp=False)
  return workdir, config, saved, abstract, shardings


def _files(workdir: str) -> dict[str, bytes]:
  """Every file of `workdir` (but those runs append to) by relative path, with its bytes."""
  files = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), workdir)
      if relative.split(os.sep)[0] not in WRITTEN_BY_RUNS:
        with open(os.path.join(root, name), 'rb') as f:
          files[relative] = f.read()
  return files


def _assert_untouched(workdir: str, others: dict[str, bytes]) -> None:
  """The files of `others` are all there with the same bytes, but config.json, where a run
  records its config (train.steps, a resumable field, differs) and nothing else."""
  now = {k: v for k, v in _files(workdir).items() if k in others}
  assert now.keys() == others.keys()
  for name in others:
    if name == 'config.json' and now[name] != others[name]:
      before, after = json.loads(others[name]), json.loads(now[name])
      assert {**before, 'train': None} == {**after, 'train': None}
    else:
      assert now[name] == others[name], name


def _damage(path: str, how: str) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  if how == 'random':  # the same length, different bytes
    garbage = np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8)
    data = (np.frombuffer(data, np.uint8) ^ (garbage | 1)).tobytes()  # every byte differs
  else:  # truncated to an odd length: not a whole number of uint16 tokens either
    data = data[: len(data) // 2 | 1]
  with open(path, 'wb') as f:
    f.write(data)


def _copy_and_damage(trained, tmp_path, relative: str, how: str):
  """A copy of the trained workdir with `relative` damaged; (copy, original bytes, the others)."""
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(trained[0], workdir)
  with open(os.path.join(workdir, relative), 'rb') as f:
    original = f.read()
  _damage(os.path.join(workdir, relative), how)
  others = {k: v for k, v in _files(workdir).items() if k != relative}
  return workdir, original, others


def _assert_params(params, expected) -> None:
  leaves = jax.tree.leaves(jax.tree.map(np.asarray, params))
  assert len(leaves) == len(jax.tree.leaves(expected['params'])) > 5
  for got, want in zip(leaves, jax.tree.leaves(expected['params'])):
    np.testing.assert_array_equal(got, want)


def _logged_steps(workdir: str) -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f if 'train_loss' in json.loads(line)]


def _train_more(trained, workdir: str, steps: int = STEPS + 5) -> list[int]:
  """Trains `workdir` on to `steps`; the training steps this call logged."""
  before = len(_logged_steps(workdir))
  trainer.train_and_evaluate(_config(trained[1].data.text_files, steps), workdir, False)
  return _logged_steps(workdir)[before:]


# (the damaged file, how, whether load_run (gptjax.sample, gptjax.evaluate) reads it)
REFUSED = [
  ('config.json', 'random', True),
  ('config.json', 'truncate', True),
  ('tokenizer_chars.json', 'random', True),
  ('tokenizer_chars.json', 'truncate', True),
  ('data/meta.json', 'random', False),
  ('data/meta.json', 'truncate', False),
  ('data/train.bin', 'random', False),
  ('data/train.bin', 'truncate', False),
  ('data/val.bin', 'random', False),
  ('data/val.bin', 'truncate', False),
]


@pytest.mark.parametrize('relative,how,read_by_load_run', REFUSED)
def test_a_damaged_file_is_one_error_naming_it_and_the_restored_file_resumes(
  trained, tmp_path, relative, how, read_by_load_run
):
  workdir, original, others = _copy_and_damage(trained, tmp_path, relative, how)
  path = os.path.join(workdir, relative)
  with pytest.raises(UserError, match=f'{path} is') as raised:
    trainer.train_and_evaluate(_config(trained[1].data.text_files, STEPS + 5), workdir, False)
  assert '\n' not in str(raised.value)
  if read_by_load_run:
    with pytest.raises(UserError, match=f'{path} is'):
      load_run(workdir)
  else:
    _assert_params(load_run(workdir)[2], trained[2][STEPS])
  _assert_untouched(workdir, others)
  with open(path, 'wb') as f:
    f.write(original)
  assert _train_more(trained, workdir) == list(range(STEPS + 1, STEPS + 6))


@pytest.mark.parametrize('how', ['random', 'truncate'])
def test_a_garbage_sentencepiece_model_is_one_error_naming_it(tmp_path, how):
  path = tmp_path / 'tokenizer.model'
  path.write_bytes(b'\x0a\x0b<unk>' * 300)  # starts like a model, and is not one
  _damage(str(path), how)
  with pytest.raises(UserError, match=f'{path} is not a readable sentencepiece tokenizer'):
    tokenizers.load_or_train('sentencepiece', 512, str(tmp_path))


def test_a_garbage_fingerprint_record_warns_restores_unverified_and_is_rewritten(
  trained, tmp_path, capsys
):
  relative = 'checkpoints/fingerprints.json'
  workdir, _, others = _copy_and_damage(trained, tmp_path, relative, 'random')
  _assert_params(load_run(workdir)[2], trained[2][STEPS])  # it does not read the record
  _assert_untouched(workdir, others)
  capsys.readouterr()
  assert _train_more(trained, workdir) == list(range(STEPS + 1, STEPS + 6))
  warnings = [line for line in capsys.readouterr().err.splitlines() if 'warning:' in line]
  assert len(warnings) == 1 and os.path.join(workdir, relative) in warnings[0], warnings
  with open(os.path.join(workdir, relative)) as f:
    assert list(json.load(f)) == [str(STEPS + 5)]  # rewritten by the next save
  assert not os.path.exists(os.path.join(workdir, 'corrupt_checkpoints'))


def _checkpoint_files(trained) -> list[str]:
  directory = os.path.join(trained[0], NEWEST)
  return sorted(
    os.path.relpath(p, trained[0])
    for p in glob.glob(os.path.join(directory, '**'), recursive=True)
    if os.path.isfile(p)
  )


def test_each_damaged_checkpoint_file_falls_back_to_the_previous_checkpoint(
  trained, tmp_path, capsys
):
  """For every file of the newest checkpoint: reading the parameters (load_run) warns and reads
  the previous checkpoint, moving nothing; training's restore warns, sets the checkpoint aside and
  resumes from the previous one; or the file is not needed and the newest checkpoint is restored
  with its recorded fingerprint. Put back with the original file, the checkpoint is used again."""
  _, config, saved, abstract, shardings = trained
  files = _checkpoint_files(trained)
  assert any('_METADATA' in f for f in files) and any('manifest.ocdbt' in f for f in files)
  outcomes = {}
  for i, relative in enumerate(files):
    workdir, original, others = _copy_and_damage(trained, tmp_path / str(i), relative, 'random')
    capsys.readouterr()
    params = load_run(workdir)[2]
    warned = 'warning:' in capsys.readouterr().err
    _assert_params(params, saved[10 if warned else STEPS])
    _assert_untouched(workdir, others)

    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    state = checkpoint.restore_latest(mngr, abstract, shardings)
    mngr.close()
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'warning:' in line]
    step = int(state.step)
    _assert_params(state.params, saved[step])
    aside = glob.glob(os.path.join(workdir, 'corrupt_checkpoints', f'{STEPS}-*'))
    if step == STEPS:
      assert not warnings and not aside, (relative, warnings)
      _assert_untouched(workdir, others)
    else:
      assert step == 10 and len(warnings) == 1 and f'checkpoint {STEPS}' in warnings[0], relative
      assert len(aside) == 1
      moved = {
        os.path.join(NEWEST, os.path.relpath(k, os.path.relpath(aside[0], workdir))): v
        for k, v in _files(workdir).items()
        if k.startswith('corrupt_checkpoints')
      }
      assert {k: v for k, v in moved.items() if k != relative} == {
        k: v for k, v in others.items() if k.startswith(NEWEST + os.sep)
      }
      # Put back, with the original file, the checkpoint is the newest again.
      os.rename(aside[0], os.path.join(workdir, NEWEST))
    with open(os.path.join(workdir, relative), 'wb') as f:
      f.write(original)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    state = checkpoint.restore_latest(mngr, abstract, shardings)
    mngr.close()
    assert int(state.step) == STEPS and 'warning:' not in capsys.readouterr().err, relative
    outcomes[relative] = step
  # Damage to _METADATA, the manifest or a data file that holds the state is found; a file
  # that restoring does not read (some of orbax's per-process files) leaves the checkpoint whole,
  # as the parameters compared above and the fingerprint check of restore_latest show.
  assert outcomes[os.path.join(NEWEST, 'default', '_METADATA')] == 10, outcomes
  assert outcomes[os.path.join(NEWEST, 'default', 'manifest.ocdbt')] == 10, outcomes
  assert any(step == 10 for f, step in outcomes.items() if f'{os.sep}d{os.sep}' in f), outcomes


def test_training_resumes_from_the_previous_checkpoint_past_a_damaged_one(trained, tmp_path):
  """The whole of train_and_evaluate on the largest file of the newest checkpoint damaged."""
  largest = max(
    _checkpoint_files(trained), key=lambda f: os.path.getsize(os.path.join(trained[0], f))
  )
  workdir, _, _ = _copy_and_damage(trained, tmp_path, largest, 'random')
  assert _train_more(trained, workdir) == list(range(11, STEPS + 6))
  assert len(os.listdir(os.path.join(workdir, 'corrupt_checkpoints'))) == 1


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', module, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_the_commands_print_one_error_line_naming_the_damaged_file(trained, tmp_path):
  workdir, _, _ = _copy_and_damage(trained, tmp_path / 'config', 'config.json', 'random')
  result = _cli('gptjax.sample', f'--workdir={workdir}', '--prompt=def', '--max_new_tokens=2')
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(f'error: {workdir}/config.json is not a readable run config')
  assert 'Traceback' not in result.stderr

  workdir, _, _ = _copy_and_damage(trained, tmp_path / 'train', 'data/train.bin', 'truncate')
  config = trained[1]
  result = _cli(
    'gptjax.main',
    '--config',
    'tiny',
    f'--workdir={workdir}',
    '--config.tokenizer.kind=char',
    '--config.tokenizer.vocab_size=300',
    '--config.sample.max_new_tokens=0',
    '--config.data.source=text_files',
    f'--config.data.text_files={config.data.text_files}',
    f'--config.train.steps={STEPS + 5}',
    '--config.train.checkpoint_every=10',
  )
  assert result.returncode == 1, result.stderr
  assert (
    result.stderr.strip().splitlines()[-1].startswith(f'error: {workdir}/data/train.bin is damaged')
  )
  assert 'Traceback' not in result.stderr
