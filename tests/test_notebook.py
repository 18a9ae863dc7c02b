"""experiments/colab_tpu.ipynb: its code runs on a CPU (tiny config, smoke mode); its install cell
installs gptjax's core next to Colab's own jax, and stops with a message while GPTJAX_SOURCE is
unset; its TPU and GPU settings (not run here: no TPU) validate and fit those devices' memory;
every gptjax and jax name its cells use exists, called with parameters it has."""

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from gptjax import configuration
from gptjax.configs import default
from gptjax.models import accounting
from gptjax.scaling import sweep
from gptjax.training import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'experiments', 'colab_tpu.ipynb')
GiB = 2**30

# Colab's TPU runtime as googlecolab/backend-info's pip-freeze.tpu.txt lists it (August 2026,
# Python 3.13), the packages gptjax's core and its extras name: no ml-collections;
# jax, flax and absl-py below gptjax's ranges; torch (a CPU build, beside torch_xla) and
# transformers preinstalled.
COLAB_TPU = {
  'jax': '0.7.2',
  'jaxlib': '0.7.2',
  'libtpu': '0.0.21.1',
  'flax': '0.11.2',
  'optax': '0.2.8',
  'orbax-checkpoint': '0.12.4',
  'absl-py': '1.4.0',
  'numpy': '2.1.3',
  'sentencepiece': '0.2.2',
  'tensorflow-datasets': '4.9.10',
  'array-record': '0.8.3',
  'tqdm': '4.67.3',
  'scipy': '1.16.3',
  'matplotlib': '3.10.0',
  'protobuf': '7.35.1',
  'packaging': '26.3',
  'torch': '2.9.0+cpu',
  'torch-xla': '2.9.0',
  'transformers': '5.15.0',
}
# What the install may never ask pip for: the runtime's jax, and the extras' packages.
NEVER_INSTALLED = {
  'jax',
  'jaxlib',
  'libtpu',
  'torch',
  'transformers',
  'safetensors',
  'tokenizers',
  'lm-eval',
  'wandb',
  'submitit',
  'pytest',
}


def _code_cells() -> list[tuple[list[str], str]]:
  """(tags, source) of each code cell, in order."""
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  assert notebook['nbformat'] == 4 and notebook['metadata']['accelerator'] == 'TPU'
  return [
    (cell['metadata'].get('tags', []), ''.join(cell['source']))
    for cell in notebook['cells']
    if cell['cell_type'] == 'code'
  ]


def _colab_only() -> tuple[str, str]:
  """(the cell that sets GPTJAX_SOURCE, the install cell)."""
  cells = [source for tags, source in _code_cells() if 'colab-only' in tags]
  assert len(cells) == 2, 'expected the GPTJAX_SOURCE cell and the install cell'
  return cells[0], cells[1]


def _install_namespace() -> dict:
  """The install cell's names, without its last line, which installs."""
  _, install = _colab_only()
  body, call = install.rstrip().rsplit('\n', 1)
  assert call == 'install(GPTJAX_SOURCE)'
  namespace = {}
  exec(compile(body, 'install cell', 'exec'), namespace)
  return namespace


def _requires() -> list[str]:
  """gptjax's requirements as importlib.metadata.requires lists them, from pyproject.toml."""
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  requires = list(project['dependencies'])
  for extra, packages in project['optional-dependencies'].items():
    requires += [f'{package}; extra == "{extra}"' for package in packages]
  return requires


def _name(requirement: str) -> str:
  return re.sub(r'[-_.]+', '-', re.match(r'[A-Za-z0-9._-]+', requirement).group()).lower()


def test_shipped_notebook_stops_until_gptjax_source_is_set():
  source, install = _colab_only()
  assert source.rstrip().endswith("\nGPTJAX_SOURCE = ''")
  for tags, cell in _code_cells():  # pip only through the install cell: no shell commands
    assert not re.search(r'^\s*[!%]', cell, re.MULTILINE), cell
    assert 'requirements.txt' not in cell and 'jax[' not in cell
    assert 'YOUR_ACCOUNT' not in cell
  namespace = {}
  exec(compile(source, 'source cell', 'exec'), namespace)
  with pytest.raises(Exception, match='GPTJAX_SOURCE is empty: set it') as raised:
    exec(compile(install, 'install cell', 'exec'), namespace)
  assert type(raised.value).__name__ == 'InstallError'


@pytest.mark.parametrize(
  'source, message',
  [
    ('  ', 'GPTJAX_SOURCE is empty'),
    ('git+https://github.com/<your-account>/gptjax.git', 'still holds a placeholder'),
    ('https://github.com/YOUR_ACCOUNT/gptjax', 'still holds a placeholder'),
    ('https://github.com/someone/gptjax', 'a git repository is git\\+https://github.com/someone'),
    ('/nonexistent/gptjax', 'no gptjax directory, .whl or .tar.gz at /nonexistent/gptjax'),
    (os.path.join(REPO, 'gptjax'), 'has no pyproject.toml'),
  ],
)
def test_install_refuses_sources_pip_would_fail_on(source, message):
  namespace = _install_namespace()
  calls = []
  with pytest.raises(namespace['InstallError'], match=message):
    namespace['install'](source, run_pip=calls.append, installed=COLAB_TPU, requires=_requires())
  assert calls == []


def test_install_on_colab_tpu_adds_only_the_missing_core_and_pins_the_runtime(tmp_path, capsys):
  namespace = _install_namespace()
  wheel = tmp_path / 'gptjax-0.2.0-py3-none-any.whl'
  wheel.write_bytes(b'')
  for source in (REPO, str(wheel), 'git+https://github.com/someone/gptjax.git'):
    calls = []
    missing = namespace['install'](
      source, run_pip=calls.append, installed=COLAB_TPU, requires=_requires()
    )
    assert calls[0] == ['--no-deps', '--force-reinstall', source]
    assert sorted(_name(r) for r in missing) == ['ml-collections']
    assert len(calls) == 2 and calls[1][0] == '--constraint' and calls[1][2:] == missing
    for requirement in missing:
      assert _name(requirement) not in NEVER_INSTALLED
    with open(calls[1][1]) as f:
      pins = f.read().split()
    for name in ('jax', 'jaxlib', 'libtpu', 'flax', 'numpy', 'torch', 'transformers'):
      assert f'{name}=={COLAB_TPU[name]}' in pins
  out = capsys.readouterr().out
  assert "kept the runtime's jax 0.7.2, below gptjax's >=0.10" in out
  assert "kept the runtime's flax 0.11.2" in out
  # Everything there already (a second run, or a full environment): gptjax alone.
  calls = []
  everything = {**COLAB_TPU, 'jax': '0.10.2', 'ml-collections': '1.1.0'}
  namespace['install'](REPO, run_pip=calls.append, installed=everything, requires=_requires())
  assert calls == [['--no-deps', '--force-reinstall', REPO]]
  # No jax at all: say so rather than install one that may not see the accelerator.
  without_jax = {k: v for k, v in COLAB_TPU.items() if k not in ('jax', 'jaxlib')}
  with pytest.raises(namespace['InstallError'], match='this Python has no jax'):
    namespace['install'](
      REPO, run_pip=lambda args: None, installed=without_jax, requires=_requires()
    )


def _settings_namespace() -> dict:
  """The settings cell's imports and functions (make_config), without the lines that use jax."""
  (cell,) = [source for _, source in _code_cells() if 'def make_config(' in source]
  tree = ast.parse(cell)
  tree.body = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef)]
  namespace = {}
  exec(compile(tree, 'settings cell', 'exec'), namespace)
  return namespace


@pytest.mark.parametrize(
  'backend, devices, memory, bfloat16, dtype, micro_batch',
  [
    ('tpu', 1, 15.75 * GiB, True, 'bfloat16', 4),  # v5e-1, Colab's TPU
    ('tpu', 1, 31.25 * GiB, True, 'bfloat16', 8),  # v6e-1
    ('tpu', 8, 7.5 * GiB, True, 'bfloat16', 1),  # v2-8, Colab's TPU until September 2025
    ('gpu', 1, 0.75 * 15 * GiB, False, 'float32', 2),  # T4, XLA's 75% of its memory
    ('gpu', 1, 0.75 * 40 * GiB, True, 'bfloat16', 8),  # A100 40GB
    ('cpu', 1, 16 * GiB, False, 'float32', 32),
    ('smoke', 1, 16 * GiB, False, 'float32', 8),
  ],
)
def test_settings_validate_and_fit_each_backend(
  backend, devices, memory, bfloat16, dtype, micro_batch
):
  config = _settings_namespace()['make_config'](backend, devices, memory, bfloat16)
  # Only fields gptjax has (ConfigDict.update would add a misspelt one silently).
  assert set(workdir.flatten(config.to_dict())) == set(
    workdir.flatten(default.get_config().to_dict())
  )
  configuration.validate(config, devices)
  train = config.train
  assert config.model.dtype == dtype and config.sample.max_new_tokens == 0
  assert train.global_batch_size // devices // train.grad_accum_steps == micro_batch
  if backend in ('tpu', 'gpu'):
    assert (config.model.n_layers, config.model.d_model, train.seq_len) == (12, 768, 1024)
    assert train.global_batch_size == max(32, devices)
    model = configuration.model_config(config, config.tokenizer.vocab_size)
    assert (
      sum(accounting.memory_estimate(model, micro_batch, train.seq_len).values()) < 0.7 * memory
    )


def _sweep_file() -> str:
  (cell,) = [source for _, source in _code_cells() if 'SWEEP_FILE = ' in source]
  (assign,) = [
    n for n in ast.parse(cell).body if isinstance(n, ast.Assign) and n.targets[0].id == 'SWEEP_FILE'
  ]
  return ast.literal_eval(assign.value)


def test_the_notebooks_sweep_is_experiments_demo_sweep(tmp_path):
  path = tmp_path / 'demo_sweep.py'
  path.write_text(f'SMOKE = False\n\n{_sweep_file()}')
  base, runs = sweep.load_sweep(str(path))
  demo_base, demo_runs = sweep.load_sweep(os.path.join(REPO, 'experiments', 'demo_sweep.py'))
  assert runs == demo_runs and len(runs) == 19
  assert base.to_dict() == demo_base.to_dict()


class _Names(ast.NodeVisitor):
  """Checks that each gptjax and jax name a cell reaches (module.attribute chains from its
  imports) exists, and that each call to a gptjax function binds to its signature."""

  def __init__(self):
    self.bound = {}

  def visit_Import(self, node):
    for alias in node.names:
      if alias.name.split('.')[0] in ('gptjax', 'jax'):
        module = importlib.import_module(alias.name)
        self.bound[alias.asname or alias.name.split('.')[0]] = (
          module if alias.asname else importlib.import_module(alias.name.split('.')[0])
        )

  def visit_ImportFrom(self, node):
    if node.module.split('.')[0] not in ('gptjax', 'jax'):
      return
    module = importlib.import_module(node.module)
    for alias in node.names:
      if not hasattr(module, alias.name):
        importlib.import_module(f'{node.module}.{alias.name}')
      self.bound[alias.asname or alias.name] = getattr(module, alias.name)

  def resolve(self, node):
    """The object an expression names, or None where that is not known statically."""
    if isinstance(node, ast.Name):
      return self.bound.get(node.id)
    if isinstance(node, ast.Attribute):
      owner = self.resolve(node.value)
      if inspect.ismodule(owner) or inspect.isclass(owner):
        assert hasattr(owner, node.attr), f'{owner.__name__} has no {node.attr}'
        return getattr(owner, node.attr)
    return None

  def visit_Attribute(self, node):
    self.resolve(node)
    self.generic_visit(node)

  def visit_Call(self, node):
    function = self.resolve(node.func)
    if (
      callable(function)
      and getattr(function, '__module__', '').startswith('gptjax')
      and not any(isinstance(a, ast.Starred) for a in node.args)
      and all(k.arg for k in node.keywords)
    ):
      inspect.signature(function).bind(*node.args, **{k.arg: k.value for k in node.keywords})
    self.generic_visit(node)


def test_cells_use_only_gptjax_and_jax_names_that_exist():
  names = _Names()
  for _, source in _code_cells():
    names.visit(ast.parse(source))
  names.visit(ast.parse(_sweep_file()))
  assert {'trainer', 'sampling', 'load_run', 'benchmark', 'read_metrics', 'jax'} <= set(names.bound)


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu_in_smoke_mode(tmp_path):
  # Every code cell but the two colab-only ones (GPTJAX_SOURCE and the install: this environment
  # has gptjax), from another directory: the notebook needs no checkout.
  source = '\n\n'.join(s for tags, s in _code_cells() if 'colab-only' not in tags)
  result = subprocess.run(
    [sys.executable, '-c', source],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=600,
    env={
      **os.environ,
      'GPTJAX_NOTEBOOK_SMOKE': '1',
      'GPTJAX_NOTEBOOK_WORK': str(tmp_path / 'work'),
      'MPLBACKEND': 'Agg',
    },
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '[CpuDevice(id=0)]' in result.stdout
  assert '2 layers, d_model 32, float32; 6 steps of 8 x 32 tokens' in result.stdout
  assert 'eval_loss' in result.stdout and 'step 6: eval loss' in result.stdout
  assert result.stdout.count('--- sample ') == 3 and 'MFU' in result.stdout
  assert '# Scaling-law report' in result.stdout
  for path in ('losses.png', 'train_smoke/metrics.jsonl', 'sweep_report/report.md'):
    assert os.path.exists(tmp_path / 'work' / path), path
