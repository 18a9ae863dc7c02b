"""What fine-tuning (finetuning.py) needs of each architecture it starts from, one record each, so
that the fine-tuner branches on none of them:

  model.architecture  rows (task_inputs.py)         the head reads        auxiliary loss L1
  gpt                 START a [DELIM b] EXTRACT     the final hidden      next-token cross-entropy
                      (GPT-1, Radford et al. 2018)  state at EXTRACT      (lm_coef * L1)
  bert                [CLS] a [SEP] [b [SEP]],      the final hidden      none: lm_coef must be 0
                      segments 0 for [CLS] a [SEP]  state at [CLS]
                      and 1 for b [SEP] (Devlin
                      et al. 2019, 3-4)

BERT attends only to each row's own tokens (a padding mask from the row's length), and reads the
segment ids through its segment embedding (wse, model.type_vocab_size rows), which pre-training
trained for segment 0 only: fine-tuning trains segment 1's row from its initialisation. The head
is the same for both (finetuning.TaskHead: dropout and a linear map), on the hidden state itself:
BertClassifier's pooler (gptjax/models/bert.py) is not used, as BERT's pre-training here never
trains one (it has no next-sentence prediction).
The encoder-decoder is not fine-tuned (it has no record).
"""

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.data.tokenizers import Tokenizer
from gptjax.downstream import task_inputs
from gptjax.errors import UserError
from gptjax.models import bert, gpt
from gptjax.models.config import ModelConfig

# (module, its params, ids (N, L), segments (N, L), lengths (N,), deterministic, rngs or None) ->
# (next-token logits (N, L, V), or None where there is no LM loss; the hidden states (N, D) the
# head reads).
Features = Callable[
  [nn.Module, dict, jax.Array, jax.Array, jax.Array, bool, dict | None],
  tuple[jax.Array | None, jax.Array],
]


@dataclasses.dataclass(frozen=True)
class Backbone:
  architecture: str  # model.architecture
  params_key: str  # the fine-tuner's params are {params_key: the model's, 'head': the head's}
  markers: Callable[[Tokenizer], task_inputs.Markers]  # a UserError when the tokenizer has none
  features: Features
  lm_loss: bool  # whether the auxiliary LM loss L1 exists (finetune.lm_coef may be > 0)
  # Whether a checkpoint with fewer embedding rows than the tokenizer has ids may get new rows
  # appended (finetuning.extend_vocab); BERT's last row is [MASK], so it may not.
  extend_vocab: bool
  # (model config, task kind) -> None; a UserError for what this architecture cannot fine-tune.
  check: Callable[[ModelConfig, str], None] = lambda model_config, kind: None


def _gpt_features(model, params, ids_NxL, segments_NxL, lengths_N, deterministic, rngs):
  del segments_NxL  # a GPT has no segment embedding
  logits_NxLxV, hidden_NxLxD = model.apply(
    {'params': params}, ids_NxL, deterministic=deterministic, rngs=rngs, return_hidden=True
  )
  extract_N = jnp.maximum(lengths_N - 1, 0)  # the last token is EXTRACT
  return logits_NxLxV, hidden_NxLxD[jnp.arange(ids_NxL.shape[0]), extract_N]


def _bert_features(model, params, ids_NxL, segments_NxL, lengths_N, deterministic, rngs):
  # Keys beyond a row's length are masked; a multiple choice's missing choice (length 0) keeps
  # its first position, so that no row is all masked (its score is discarded anyway).
  real_NxL = jnp.arange(ids_NxL.shape[1]) < jnp.maximum(lengths_N, 1)[:, None]
  _, hidden_NxLxD = model.apply(
    {'params': params},
    ids_NxL,
    segments_NxL,
    deterministic=deterministic,
    rngs=rngs,
    return_hidden=True,
    mask_Bx1xL=real_NxL[:, None, :],
  )  # the MLM logits are not used: jit drops their computation
  return None, hidden_NxLxD[:, 0]  # [CLS]


def _check_bert(model_config: ModelConfig, kind: str) -> None:
  if kind != 'classification' and model_config.type_vocab_size < 2:
    raise UserError(
      f'{kind} tasks give BERT two segments, but the pre-trained model has '
      f'bert.type_vocab_size={model_config.type_vocab_size}; pre-train with '
      'bert.type_vocab_size >= 2'
    )


GPT = Backbone(
  architecture=gpt.ARCHITECTURE.name,
  params_key='gpt',
  markers=task_inputs.gpt_markers,
  features=_gpt_features,
  lm_loss=True,
  extend_vocab=True,
)
BERT = Backbone(
  architecture=bert.ARCHITECTURE.name,
  params_key='bert',
  markers=task_inputs.bert_markers,
  features=_bert_features,
  lm_loss=False,
  extend_vocab=False,
  check=_check_bert,
)
BACKBONES = {backbone.architecture: backbone for backbone in (GPT, BERT)}


def get(architecture: str, where: str = 'model.architecture') -> Backbone:
  """The record of `architecture`; a UserError naming `where` it came from when fine-tuning
  cannot start from it."""
  if architecture not in BACKBONES:
    raise UserError(
      f'{where}: a model.architecture={architecture} model cannot be fine-tuned; fine-tuning '
      f'starts from {" or ".join(BACKBONES)}'
    )
  return BACKBONES[architecture]
