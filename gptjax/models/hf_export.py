"""A gptjax GPT run as a Hugging Face transformers checkpoint (python -m gptjax.convert to_hf).

export(workdir, out) writes config.json, model.safetensors (float32) and the tokenizer
(gptjax/data/hf_tokenizers.py) into the new directory `out`, which
transformers.AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained read, with
gptjax's logits and token ids:

  model.norm='pre'   GPT2LMHeadModel: GPT-2 is gptjax's pre-LN block, final LayerNorm, biases,
                     tanh GELU, any d_ff (n_inner), tied or untied (lm_head) output.
  model.norm='post'  OpenAIGPTLMHeadModel: transformers' GPT-1 computes gptjax's post-LN block,
                     x = LN(x + attn(x)), x = LN(x + mlp(x)), with the same biases, tanh GELU
                     ('gelu' there is gelu_new) and no final LayerNorm; its MLP is always
                     4 * n_embd wide, so another model.d_ff is refused.

The parameter names are gptjax's, GPT-2's (gptjax/models/hf.py reads them the other way); GPT-1
calls the embeddings tokens_embed and positions_embed. Other features become weights:
scan_layers' stacked blocks are unstacked; sinusoidal positions are written as the learned table
they equal; muP's attention scale (q . k / K, not / sqrt(K)) is folded into the query columns of
c_attn, its readout multiplier into the last LayerNorm; CompleteP's branch multiplier into each
block's c_proj. bfloat16 parameters are written as the float32 numbers they are. What is left is
refused with a UserError before anything is written: rotary positions (both classes have a
learned position table only), architectures other than gpt, a GPT-1 d_ff other than 4 * d_model.

The checkpoint computes in float32; a run with model.dtype='bfloat16' computed its products in
bfloat16, so its own logits differ from these by that rounding.
"""

import json
import math
import os
import shutil
import uuid

import jax
import numpy as np
import safetensors.numpy

from gptjax import configuration
from gptjax.data import hf_tokenizers
from gptjax.data import tokenizers as tokenizer_lib
from gptjax.errors import UserError
from gptjax.models import accounting, hf, layers, parametrization, registry
from gptjax.models.config import ModelConfig
from gptjax.training import state

GPT2, GPT1 = 'GPT2LMHeadModel', 'OpenAIGPTLMHeadModel'


def export(workdir: str, out: str) -> str:
  """Writes the run in `workdir` as a Hugging Face checkpoint in `out` (a new or empty
  directory); returns a line saying what was written."""
  out = os.path.expanduser(out)
  _check_out(out)
  config, tokenizer = _read_gpt_run(workdir)
  model_config = configuration.model_config(config, tokenizer.vocab_size)
  hf_config = config_json(model_config, tokenizer)  # refuses what does not map, before loading
  files = hf_tokenizers.tokenizer_files(tokenizer, model_config.n_ctx)
  model = registry.build(model_config, tokenizer.pad_id)
  abstract = jax.eval_shape(lambda: registry.init_params(model, jax.random.PRNGKey(config.seed)))
  params = state.restore_params(workdir, abstract)
  tensors = hf_tensors(model_config, params)
  files['config.json'] = json.dumps(hf_config, indent=2).encode()
  files['model.safetensors'] = safetensors.numpy.save(tensors, metadata={'format': 'pt'})
  _write_directory(out, files)
  n_params = accounting.count_params(model_config).total
  return (
    f'wrote {out}: {hf_config["architectures"][0]}, {model_config.n_layers} layers, d_model '
    f'{model_config.d_model}, {n_params:,} parameters, the {tokenizer.kind} tokenizer '
    f'({tokenizer.vocab_size:,} tokens)'
  )


def _check_out(out: str) -> None:
  if os.path.isdir(out) and os.listdir(out):
    raise UserError(f'--out {out} exists and is not empty; export into a new directory')
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f'--out {out} exists and is not a directory; export into a new directory')


def _read_gpt_run(workdir: str):
  config_path = os.path.join(workdir, 'config.json')
  if os.path.isfile(config_path):
    found = configuration.read_config(config_path).model.get('architecture', 'gpt')
    if found != 'gpt':
      raise UserError(
        f'{workdir} holds a model.architecture={found} run; to_hf exports GPT language models '
        f'(model.architecture=gpt) as {GPT2} or {GPT1}'
      )
  return state.read_run(workdir, 'gpt')


def target_class(cfg: ModelConfig) -> str:
  """The transformers class of the model `cfg`; a UserError naming each feature it lacks."""
  target = GPT2 if cfg.norm == 'pre' else GPT1
  problems = []
  if cfg.architecture != 'gpt':
    problems.append(f'model.architecture={cfg.architecture} (only gpt is exported)')
  if cfg.pos_emb == 'rotary':
    problems.append(
      f"model.pos_emb='rotary': {target} adds a learned position table to the embeddings and "
      'has no rotary embeddings'
    )
  if target == GPT1 and cfg.d_ff != 4 * cfg.d_model:
    problems.append(
      f"model.d_ff={cfg.d_ff}: a model.norm='post' model is exported as {GPT1}, whose MLP is "
      f'always 4 * d_model = {4 * cfg.d_model} wide'
    )
  if problems:
    raise UserError(f'cannot export to Hugging Face: {"; ".join(problems)}')
  return target


def config_json(cfg: ModelConfig, tokenizer: tokenizer_lib.Tokenizer) -> dict:
  """The config.json of the Hugging Face model that computes what gptjax's model `cfg` does."""
  target = target_class(cfg)
  shared = {
    'architectures': [target],
    'vocab_size': cfg.vocab_size,
    'n_positions': cfg.n_ctx,
    'n_embd': cfg.d_model,
    'n_layer': cfg.n_layers,
    'n_head': cfg.n_heads,
    'layer_norm_epsilon': cfg.layer_norm_eps,
    'initializer_range': cfg.init_std,
    'resid_pdrop': cfg.resid_dropout,
    'embd_pdrop': cfg.embd_dropout,
    'attn_pdrop': cfg.attn_dropout,
    'tie_word_embeddings': cfg.tie_embeddings,
    'bos_token_id': tokenizer.bos_id,
    'eos_token_id': tokenizer.eos_id,
    'pad_token_id': tokenizer.pad_id,
    'dtype': 'float32',
  }
  if target == GPT1:
    return {'model_type': 'openai-gpt', **shared, 'afn': 'gelu'}  # transformers' gelu_new
  return {
    'model_type': 'gpt2',
    **shared,
    'n_inner': cfg.d_ff,
    'activation_function': 'gelu_new',  # GELU's tanh approximation, gptjax's
    'scale_attn_weights': True,
    'scale_attn_by_inverse_layer_idx': False,
    'reorder_and_upcast_attn': False,
    'use_cache': True,
  }


def hf_tensors(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
  """The float32 state dict of the Hugging Face model of config_json(cfg, ...) holding `params`."""
  target = target_class(cfg)
  # Copies (writable, for the folding), float32 even from bfloat16: every value is exact.
  params = jax.tree.map(lambda leaf: np.array(jax.device_get(leaf), np.float32), params)
  if cfg.scan_layers:  # one stacked block -> h_0 ... h_{n-1}
    stacked = params.pop('h')['block']
    params.update(
      {f'h_{i}': jax.tree.map(lambda s, i=i: s[i], stacked) for i in range(cfg.n_layers)}
    )
  tensors = {}
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = hf.hf_name(tuple(k.key for k in key_path))
    tensors[name] = leaf.T if name == 'lm_head.weight' else leaf
  if cfg.pos_emb == 'sinusoidal':
    tensors['wpe.weight'] = np.asarray(layers.sinusoidal_positions(cfg.n_ctx, cfg.d_model))
  _fold_multipliers(cfg, tensors)
  renames = {'wte.': 'tokens_embed.', 'wpe.': 'positions_embed.'} if target == GPT1 else {}

  def hf_key(name: str) -> str:
    if name == 'lm_head.weight':
      return name
    for old, new in renames.items():
      if name.startswith(old):
        name = new + name.removeprefix(old)
    return 'transformer.' + name

  return {hf_key(name): np.ascontiguousarray(t, np.float32) for name, t in sorted(tensors.items())}


def _fold_multipliers(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> None:
  """Folds the multipliers gptjax's parametrizations apply (gptjax/models/parametrization.py)
  into the weights they multiply, in place: the exported classes have none of their own."""
  d_model = cfg.d_model
  head_dim = d_model // cfg.n_heads
  query = math.sqrt(head_dim) / parametrization.attention_temperature(cfg, head_dim)
  branch = parametrization.branch_multiplier(cfg, cfg.n_layers)
  readout = float(parametrization.readout(cfg, 1.0))
  for i in range(cfg.n_layers):
    if query != 1.0:  # q . k / T = (q sqrt(K) / T) . k / sqrt(K), and q is c_attn's first D columns
      tensors[f'h.{i}.attn.c_attn.weight'][:, :d_model] *= query
      tensors[f'h.{i}.attn.c_attn.bias'][:d_model] *= query
    if branch != 1.0:  # a * f(x): f's last layer, c_proj, times a
      for sublayer in ('attn', 'mlp'):
        tensors[f'h.{i}.{sublayer}.c_proj.weight'] *= branch
        tensors[f'h.{i}.{sublayer}.c_proj.bias'] *= branch
  if readout != 1.0:  # the output layer reads s * LN(x): LN with scale and bias times s
    last_norm = 'ln_f' if cfg.norm == 'pre' else f'h.{cfg.n_layers - 1}.ln_2'
    tensors[f'{last_norm}.weight'] *= readout
    tensors[f'{last_norm}.bias'] *= readout


def _write_directory(out: str, files: dict[str, bytes]) -> None:
  """`files` in the directory `out`, all or none: written into a new sibling directory that is
  then renamed to `out` (which may be an empty directory: rename replaces it)."""
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  partial = os.path.join(
    parent, f'.{os.path.basename(os.path.abspath(out))}.{uuid.uuid4().hex[:8]}'
  )
  os.mkdir(partial)
  try:
    for name, data in files.items():
      with open(os.path.join(partial, name), 'wb') as f:
        f.write(data)
    os.replace(partial, out)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
