"""Shared fixtures: a tiny config and small corpora written by the tests themselves."""

import dataclasses
import os
import tempfile

import pytest

# Most tests train the same tiny model: share XLA's compiled programs between tests and the
# subprocesses they start (set before any test module imports jax).
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'gptjax_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # noqa: E402  (after the cache settings above)

from gptjax import configuration  # noqa: E402
from gptjax.configs import tiny  # noqa: E402
from gptjax.data.tokenizers import ByteTokenizer  # noqa: E402
from gptjax.models import registry  # noqa: E402
from gptjax.training import checkpoint, trainer  # noqa: E402
from gptjax.training import workdir as workdir_lib  # noqa: E402
from gptjax.training.optimizer import make_optimizer  # noqa: E402
from gptjax.training.state import init_state  # noqa: E402


@pytest.fixture
def tiny_config():
  """gptjax/configs/tiny.py on the byte tokenizer (no tokenizer training) and a generated corpus."""
  config = tiny.get_config()
  config.tokenizer.kind = 'byte'
  config.sample.max_new_tokens = 0
  return config


def write_corpus(directory, n_files: int = 30, lines_per_file: int = 40) -> str:
  """Python-like text with a learnable structure; returns a glob for data.text_files."""
  os.makedirs(directory, exist_ok=True)
  for f in range(n_files):
    with open(os.path.join(directory, f'module_{f:03d}.py'), 'w') as out:
      for i in range(lines_per_file):
        out.write(f'def function_{f}_{i}(value):\n    return value * {i % 7} + {f % 5}\n\n')
  return os.path.join(directory, '*.py')


@pytest.fixture
def corpus_glob(tmp_path):
  return write_corpus(tmp_path / 'corpus')


def write_gpt2_tokenizer_files(directory, texts, vocab_size: int = 600) -> None:
  """vocab.json and merges.txt of a GPT-2-style byte-level BPE trained on `texts`, as in a Hugging
  Face GPT-2 directory (<|endoftext|> is id 0 here, 50256 in GPT-2's)."""
  import tokenizers  # pylint: disable=import-outside-toplevel

  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(
    texts, vocab_size=vocab_size, special_tokens=['<|endoftext|>'], show_progress=False
  )
  os.makedirs(directory, exist_ok=True)
  bpe.save_model(str(directory))


def make_pretrained_workdir(path, vocab_rows: int | None = None, config=None) -> str:
  """A pre-training workdir of `config` (default: gptjax/configs/tiny.py, a GPT) on the byte
  tokenizer, holding a step-0 checkpoint: what gptjax.main leaves, without spending time on
  training. vocab_rows below the model's vocabulary (262 for a GPT) makes a checkpoint without
  embedding rows for the last tokens."""
  config = tiny.get_config() if config is None else config
  config.tokenizer.kind, config.sample.max_new_tokens = 'byte', 0
  os.makedirs(path)
  workdir_lib.save_config(config, str(path))
  model_config = configuration.model_config(config, ByteTokenizer().vocab_size)
  model = registry.build(
    dataclasses.replace(model_config, vocab_size=vocab_rows or model_config.vocab_size)
  )
  mngr = checkpoint.manager(str(path), 1)
  checkpoint.save(
    mngr, jax.jit(lambda: init_state(model, make_optimizer(config.train), config.seed))()
  )
  mngr.close()
  return str(path)


def preempt_after_step(monkeypatch, step: int) -> None:
  """Makes training's Preemption agree to stop (as after a SIGTERM) once `step` steps have run:
  the loop asks it once a step."""

  class PreemptAfterStep(trainer.Preemption):
    steps = 0

    def agreed(self) -> bool:
      PreemptAfterStep.steps += 1
      return PreemptAfterStep.steps == step

  monkeypatch.setattr(trainer, 'Preemption', PreemptAfterStep)
