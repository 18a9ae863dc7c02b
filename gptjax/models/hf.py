"""Hugging Face GPT-2 checkpoints read from local disk, as a gptjax model and parameters, or as a
gptjax workdir (python -m gptjax.convert hf_gpt2); gptjax/models/hf_export.py writes the other way.

GPT-2 is gptjax's 'pre' variant with learned positions, tied embeddings, GELU (tanh approximation)
and LayerNorm eps 1e-5, and model.py uses GPT-2's parameter names, so loading is a renaming:
h.3.attn.c_attn.weight -> h_3/attn/c_attn/kernel. GPT-2's Conv1D layers keep their weight as
(in, out), the transpose of torch.nn.Linear and the layout of a flax Dense kernel, so they are
copied as they are; only an untied lm_head (a torch Linear, (out, in)) is transposed. The query,
key and value columns of c_attn are in the order model.py splits them.
"""

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.numpy

from gptjax.configs import gpt2_small
from gptjax.data import cache, sources
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.models.config import ModelConfig
from gptjax.models.gpt import GPT
from gptjax.training import checkpoint
from gptjax.training.optimizer import make_optimizer
from gptjax.training.state import TrainState


def model_config(hf_config: dict) -> ModelConfig:
  """gptjax's config of the model a Hugging Face GPT-2 config.json describes."""
  if hf_config.get('model_type', 'gpt2') != 'gpt2':
    raise UserError(f'config.json describes a {hf_config["model_type"]!r} model, not GPT-2')
  unsupported = {
    'activation_function': ('gelu_new', 'gelu_pytorch_tanh'),
    'scale_attn_weights': (True,),
    'scale_attn_by_inverse_layer_idx': (False,),
    'add_cross_attention': (False,),
  }
  for field, supported in unsupported.items():
    if field in hf_config and hf_config[field] not in supported:
      raise UserError(
        f'config.json has {field}={hf_config[field]!r}; gptjax supports '
        f'{" or ".join(map(repr, supported))}'
      )
  d_model = hf_config['n_embd']
  return ModelConfig(
    vocab_size=hf_config['vocab_size'],
    n_ctx=hf_config['n_positions'],
    n_layers=hf_config['n_layer'],
    n_heads=hf_config['n_head'],
    d_model=d_model,
    d_ff=hf_config.get('n_inner') or 4 * d_model,
    norm='pre',
    pos_emb='learned',
    tie_embeddings=hf_config.get('tie_word_embeddings', True),
    layer_norm_eps=hf_config.get('layer_norm_epsilon', 1e-5),
  )


def load_gpt2(path: str) -> tuple[GPT, dict]:
  """The model and float32 parameters of the GPT-2 checkpoint directory `path`.

  `path` holds config.json and model.safetensors (or its shards with model.safetensors.index.json,
  or pytorch_model.bin, which needs torch). Tensors the model does not use (old checkpoints' causal
  mask buffers, other heads) are ignored. Dropout is off: set it in the run config to fine-tune.
  """
  path = os.path.expanduser(path)
  config_path = os.path.join(path, 'config.json')
  if not os.path.isfile(config_path):
    raise UserError(f'{path} has no config.json (expected a Hugging Face GPT-2 directory)')
  hf_config = _read_json(config_path, 'Hugging Face model config')
  _check_shape_fields(hf_config, config_path)
  try:
    config = model_config(hf_config)
  except KeyError as e:
    raise UserError(f'{config_path} has no field {e.args[0]}') from None
  tensors = {
    name.removeprefix('transformer.'): array for name, array in _read_tensors(path).items()
  }

  def load(key_path, leaf: jax.ShapeDtypeStruct) -> jax.Array:
    name = hf_name(tuple(k.key for k in key_path))
    if name not in tensors:
      raise UserError(f'the checkpoint in {path} has no tensor {name}')
    array = tensors[name].T if name == 'lm_head.weight' else tensors[name]
    if array.shape != leaf.shape:
      raise UserError(
        f'{name} has shape {array.shape} in {path}, but config.json implies {leaf.shape}'
      )
    return jnp.asarray(array, leaf.dtype)

  params = jax.tree_util.tree_map_with_path(load, accounting.abstract_params(config))
  return GPT(config), params


def _read_json(path: str, what: str) -> dict:
  """A JSON object file of a Hugging Face directory; a UserError naming it when it is not one."""
  value, problem = sources.json_object(path)
  if value is not None:
    return value
  raise UserError(f'{path} is not a readable {what} ({problem}); put the original file back')


_SHAPE_FIELDS = ('vocab_size', 'n_positions', 'n_layer', 'n_head', 'n_embd')


def _check_shape_fields(hf_config: dict, config_path: str) -> None:
  """The model's sizes in config.json are positive integers, and the heads divide the width."""
  for field in (*_SHAPE_FIELDS, 'n_inner'):
    value = hf_config.get(field)
    if field not in hf_config or (field == 'n_inner' and value is None):
      continue
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise UserError(f'{config_path} has {field}={value!r}; it must be a positive integer')
  n_embd, n_head = hf_config.get('n_embd'), hf_config.get('n_head')
  if n_embd and n_head and n_embd % n_head:
    raise UserError(
      f'{config_path} has n_head={n_head}, which does not divide n_embd={n_embd}: not a model '
      'gptjax (or transformers) can build; put the original config.json back'
    )


def hf_name(key_path: tuple[str, ...]) -> str:
  """('h_3', 'attn', 'c_attn', 'kernel') -> 'h.3.attn.c_attn.weight'; ('wpe',) -> 'wpe.weight'."""
  *modules, leaf = key_path
  if not modules:  # a parameter of the model itself
    return f'{leaf}.weight'
  modules = [re.sub(r'^h_(\d+)$', r'h.\1', m) for m in modules]
  return '.'.join([*modules, 'bias' if leaf == 'bias' else 'weight'])


def _read_tensors(path: str) -> dict[str, np.ndarray]:
  single = os.path.join(path, 'model.safetensors')
  index = os.path.join(path, 'model.safetensors.index.json')
  torch_bin = os.path.join(path, 'pytorch_model.bin')
  if os.path.isfile(single):
    return _load_safetensors(single)
  if os.path.isfile(index):
    weight_map = _read_json(index, 'safetensors index').get('weight_map')
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
      raise UserError(f'{index} has no weight_map of tensor names to shard files')
    return {
      name: array
      for shard in sorted(set(weight_map.values()))
      for name, array in _load_safetensors(os.path.join(path, shard)).items()
    }
  if os.path.isfile(torch_bin):
    try:
      import torch  # only this format needs it
    except ImportError:
      raise UserError(
        f'{torch_bin} needs torch to read (pip install torch==2.13.0), or save the '
        'model as model.safetensors'
      ) from None
    try:
      state = torch.load(torch_bin, map_location='cpu', weights_only=True)
      return {name: t.float().numpy() for name, t in state.items()}
    except Exception as e:  # pylint: disable=broad-except  # torch raises many kinds on bad files
      raise UserError(_unreadable(torch_bin, e)) from None
  raise UserError(
    f'{path} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin'
  )


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  if not os.path.isfile(path):
    raise UserError(f'{path} is missing (the safetensors index names it)')
  try:
    return safetensors.numpy.load_file(path)
  except Exception as e:  # pylint: disable=broad-except  # SafetensorError, OSError, ...
    raise UserError(_unreadable(path, e)) from None


def _unreadable(path: str, error: Exception) -> str:
  problem = ' '.join(f'{type(error).__name__}: {error}'.split())[:200]
  return (
    f'{path} is not a readable checkpoint file ({problem}): truncated or damaged? Download it again'
  )


def convert_gpt2(hf_dir: str, workdir: str) -> ml_collections.ConfigDict:
  """Writes the GPT-2 in `hf_dir` as a gptjax run in `workdir`; returns the run's config.

  GPT-2's tokenizer has no fine-tuning markers; the model gets embedding rows for the three that
  gptjax's GPT2Tokenizer appends after the vocabulary (see _add_marker_rows).
  """
  hf_dir = os.path.expanduser(hf_dir)
  if not os.path.isdir(hf_dir):
    raise UserError(f'{hf_dir} is not a directory')
  vocab_json, merges_txt = os.path.join(hf_dir, 'vocab.json'), os.path.join(hf_dir, 'merges.txt')
  if not (os.path.isfile(vocab_json) and os.path.isfile(merges_txt)):
    raise UserError(
      f"{hf_dir} lacks vocab.json and merges.txt, GPT-2's tokenizer; copy them from "
      'the Hugging Face gpt2 directory'
    )
  if os.path.exists(os.path.join(workdir, 'config.json')):
    raise UserError(f'{workdir} already holds a run; convert into a new workdir')
  model, params = load_gpt2(hf_dir)
  tokenizer = tokenizer_lib.GPT2Tokenizer.from_files(
    vocab_json, merges_txt, model.config.vocab_size
  )
  params = _add_marker_rows(params, tokenizer.vocab_size - model.config.vocab_size)
  config = _run_config(model.config, tokenizer.vocab_size)
  optimizer = make_optimizer(config.train)
  state = TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.PRNGKey(config.seed),
  )
  tokenizer_lib.save(tokenizer, workdir)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  try:
    checkpoint.save(mngr, state)
  finally:
    checkpoint.close(mngr)
  # Last, so that an interrupted conversion leaves no half-written run behind.
  cache.write_atomic(os.path.join(workdir, 'config.json'), config.to_json(indent=1))
  return config


def _add_marker_rows(params: dict, n: int) -> dict:
  """`params` with n more token embeddings (and untied output columns), each the mean of the others.

  A new token's logit then starts at the mean logit, far below the likely tokens; a zero row would
  score 0, above every token of a model whose logits are mostly negative, as GPT-2's are.
  """
  with_mean_rows = lambda table_VxD: jnp.concatenate(
    [table_VxD, jnp.repeat(table_VxD.mean(axis=0, keepdims=True), n, axis=0)]
  )
  params = {**params, 'wte': {'embedding': with_mean_rows(params['wte']['embedding'])}}
  if 'lm_head' in params:
    params['lm_head'] = {'kernel': with_mean_rows(params['lm_head']['kernel'].T).T}
  return params


def _run_config(model: ModelConfig, vocab_size: int) -> ml_collections.ConfigDict:
  """gptjax/configs/gpt2_small.py with the checkpoint's model and the GPT-2 tokenizer."""
  config = gpt2_small.get_config()
  config.model.update({k: v for k, v in dataclasses.asdict(model).items() if k != 'vocab_size'})
  config.tokenizer.update({'kind': 'gpt2', 'vocab_size': vocab_size})
  config.train.seq_len = min(config.train.seq_len, model.n_ctx)
  return config
