"""The model config every architecture is built from (the model.* fields of a run config, plus the
tokenizer's vocabulary size; see gptjax/configuration.py).

The Literal types are the choices the run config's checks accept.
"""

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  n_ctx: int  # maximum sequence length (the learned position table's size)
  n_layers: int  # decoder blocks (GPT, encoder-decoder) or encoder blocks (BERT)
  n_heads: int
  d_model: int
  d_ff: int  # feed-forward hidden width, 4 * d_model in GPT-1/2 and BERT
  architecture: str = 'gpt'  # a name of gptjax/models/registry.py
  n_encoder_layers: int = 0  # encoder blocks of the encoder-decoder
  norm: Literal['pre', 'post'] = (
    'pre'  # 'pre' = GPT-2, 'post' = GPT-1 / original Transformer / BERT
  )
  pos_emb: Literal['learned', 'sinusoidal', 'rotary'] = 'learned'
  tie_embeddings: bool = True  # output projection = token embedding transposed
  type_vocab_size: int = 2  # BERT's segment (sentence A / B) embeddings
  embd_dropout: float = 0.0
  attn_dropout: float = 0.0  # on attention probabilities; only the 'einsum' implementation has it
  resid_dropout: float = 0.0  # on each sublayer output before the residual add
  attention_impl: Literal['einsum', 'xla', 'cudnn'] = (
    'einsum'  # 'xla'/'cudnn': jax.nn.dot_product_attention
  )
  layer_norm_eps: float = 1e-5
  init_std: float = 0.02
  # What a block keeps for the backward pass: 'none' recomputes nothing; 'full' keeps only the
  # block's input and recomputes the rest; 'dots_saveable' keeps matmul outputs and recomputes
  # the cheap elementwise work (LayerNorm, GELU, softmax) between them.
  remat: Literal['none', 'full', 'dots_saveable'] = 'none'
  # One block's computation applied n_layers times with jax.lax.scan (parameters stacked along a
  # leading axis, under params[name]['block']): compile time stops growing with depth.
  scan_layers: bool = False
  # Compute dtype of the matrix products' operands (and the attention cache); they accumulate in
  # float32, and activations between them stay float32 (see matmul). 'bfloat16' on GPU/TPU and
  # on CPUs with AMX.
  dtype: Literal['float32', 'bfloat16', 'float16'] = 'float32'
  param_dtype: Literal['float32', 'bfloat16'] = 'float32'
  # How initialisation, learning rates and multipliers scale with width and depth (see
  # gptjax/models/parametrization.py). 'sp': the standard one, fixed init_std; 'mup': the maximal
  # update parametrization relative to a model of width base_d_model (0: d_model itself).
  parametrization: Literal['sp', 'mup'] = 'sp'
  base_d_model: int = 0
  mup_output_multiplier: float = 1.0  # 'mup' logits are (h / m) . e times this (a base constant)
  # 'completep': residual branches scaled by base_n_layers / n_layers (Dey et al. 2025, alpha 1).
  depth_scaling: Literal['none', 'completep'] = 'none'
  base_n_layers: int = 0
