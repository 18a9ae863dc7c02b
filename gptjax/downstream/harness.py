"""A gptjax run as a model of EleutherAI's lm-evaluation-harness (lm-eval): `--model gptjax`.

  python -m gptjax.lm_eval --model gptjax --model_args workdir=runs/default --tasks hellaswag

Importing this module registers GPTJaxLM in lm-eval's model registry under the name `gptjax`
(gptjax/lm_eval.py is lm-eval's own command line with this module imported first). From Python:
lm_eval.simple_evaluate(model=GPTJaxLM(workdir), tasks=[...]), or model='gptjax' with
model_args={'workdir': ...} once this module is imported. Needs the [eval] extra (lm-eval).

model_args: workdir (the run: config.json, tokenizer, checkpoints/; its latest checkpoint is
read), batch_size (sequences per jitted call, 'auto' means 32; on the command line it is lm-eval's
--batch_size, whose default is 1, never a model_arg), max_gen_toks (generate_until's default when
a task sets none: 256, at most n_ctx // 2) and seed (sampling's, for tasks that sample). --device
is ignored: JAX uses its own devices.

The three kinds of request, each through gptjax's own code:
- loglikelihood(context, continuation): few_shot.encode_pair and few_shot.score, exactly as
  python -m gptjax.evaluate scores a choice: [BOS] + context + continuation encoded together, the
  continuation's tokens those after the longest prefix shared with the context's own encoding
  (lm-eval's causal models move the context's trailing spaces into the continuation to the same
  end), cut from the left to n_ctx + 1 tokens as lm-eval's Hugging Face model does; a
  continuation longer than n_ctx is an error there and here. is_greedy: every continuation token
  is the model's argmax. Batched and jitted over power-of-two length buckets.
- loglikelihood_rolling(text): the text's tokens after BOS in lm-eval's rolling windows
  (lm_eval.utils.get_rolling_token_windows with context_len=1, made disjoint, as the Hugging Face
  model does): every token is predicted once, windows of n_ctx predictions, the last with a full
  context; the windows' sums (few_shot.score) add up to the text's log-likelihood.
- generate_until(context, gen_kwargs): decoding.sampling.generate_batch, the key/value-cache
  decoder, on [BOS] + context cut from the left to n_ctx - max_gen_toks tokens (room for the
  answer, as in the Hugging Face model). It stops at EOS or after max_gen_toks tokens; the text is
  then cut before the first of the `until` strings. Greedy unless do_sample (or a temperature > 0)
  is asked for; top_k and top_p are honoured. Requests with the same gen_kwargs share batches of
  batch_size prompts (the last one padded, so every batch reuses one compilation).
"""

import json
import logging

import jax
import numpy as np
from lm_eval import models as _lm_eval_models  # noqa: F401  (the built-in models, see below)
from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
  handle_stop_sequences,
  normalize_gen_kwargs,
  postprocess_generated_text,
)

from gptjax.decoding import sampling
from gptjax.downstream import few_shot
from gptjax.errors import UserError
from gptjax.training.state import load_run

# lm_eval.api.registry.get_model registers lm-eval's own models only while the registry is empty;
# importing lm_eval.models above registers them first, so `--model hf` still works beside gptjax.

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32  # for batch_size='auto'
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's Hugging Face model's default
_GEN_KWARGS = ('until', 'max_gen_toks', 'do_sample', 'temperature', 'top_k', 'top_p')


def _batch_size(value) -> int:
  if value is None or (isinstance(value, str) and value.startswith('auto')):
    return DEFAULT_BATCH_SIZE
  try:
    size = int(value)
  except (TypeError, ValueError):
    raise UserError(f"batch_size={value!r}: give a positive integer or 'auto'") from None
  if size < 1:
    raise UserError(f'batch_size={size}: give a positive integer')
  return size


@register_model('gptjax')
class GPTJaxLM(LM):
  """lm-eval's LM over a gptjax GPT: a workdir's latest checkpoint, or a loaded `run`."""

  def __init__(
    self,
    workdir: str | None = None,
    batch_size: int | str | None = DEFAULT_BATCH_SIZE,
    max_gen_toks: int | None = None,
    seed: int = 0,
    run: tuple | None = None,
    max_batch_size: int | None = None,  # lm-eval passes these two; batch_size is used as given
    device: str | None = None,
  ):
    """run: (tokenizer, model, params) as training.state.load_run returns them, instead of a
    workdir."""
    super().__init__()
    del max_batch_size, device
    if (workdir is None) == (run is None):
      raise UserError('give the gptjax model a workdir (--model_args workdir=W) or a loaded run')
    self.workdir = None if workdir is None else str(workdir)
    self.tokenizer, self.model, self.params = load_run(self.workdir) if run is None else run
    self.n_ctx = self.model.config.n_ctx
    self.batch_size = _batch_size(batch_size)
    self.max_gen_toks = (
      min(DEFAULT_MAX_GEN_TOKS, self.n_ctx // 2) if max_gen_toks is None else int(max_gen_toks)
    )
    self.seed = int(seed)
    self._generate_calls = 0  # each batch of generate_until samples with its own key

  def get_model_info(self) -> dict:
    """What lm-eval records of the model in its results' config."""
    return {
      'workdir': self.workdir,
      'n_ctx': self.n_ctx,
      'n_params': int(sum(leaf.size for leaf in jax.tree.leaves(self.params))),
      'tokenizer': self.tokenizer.kind,
    }

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    sequences = []
    for i, (context, continuation) in enumerate(r.args for r in requests):
      try:
        ids, n, _ = few_shot.encode_pair(self.tokenizer, context, continuation, self.n_ctx)
      except ValueError as e:
        raise UserError(f'loglikelihood request {i + 1}: {e}') from None
      sequences.append((ids, n))
    logprob_N, greedy_N = few_shot.score(self.model, self.params, sequences, self.batch_size)
    results = [(float(lp), bool(g)) for lp, g in zip(logprob_N, greedy_N)]
    for request, result in zip(requests, results):
      self.cache_hook.add_partial('loglikelihood', request.args, result)
    return results

  def rolling_windows(self, text: str) -> list[tuple[list[int], int]]:
    """(ids, n) of each window of `text`: score the last n of ids, each at most n_ctx + 1 long."""
    windows = lm_utils.get_rolling_token_windows(
      token_list=self.tokenizer.encode(text),
      prefix_token=self.tokenizer.bos_id,
      max_seq_len=self.n_ctx,
      context_len=1,
    )
    return [
      (context + predicted, len(predicted))
      for context, predicted in map(lm_utils.make_disjoint_window, windows)
    ]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    sequences, owner = [], []
    for i, (text,) in enumerate(r.args for r in requests):
      windows = self.rolling_windows(text)
      sequences += windows
      owner += [i] * len(windows)
    logprob_W, _ = few_shot.score(self.model, self.params, sequences, self.batch_size)
    total_N = np.zeros(len(requests))
    np.add.at(total_N, np.array(owner, int), logprob_W)
    results = [float(t) for t in total_N]
    for request, result in zip(requests, results):
      self.cache_hook.add_partial('loglikelihood_rolling', request.args, result)
    return results

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    results: list[str | None] = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
      key = json.dumps(request.args[1], sort_keys=True, default=str)
      groups.setdefault(key, []).append(i)
    for indices in groups.values():
      gen_kwargs = requests[indices[0]].args[1]
      texts = self._generate([requests[i].args[0] for i in indices], gen_kwargs)
      for i, text in zip(indices, texts):
        results[i] = text
        self.cache_hook.add_partial('generate_until', requests[i].args, text)
    return results

  def _generate(self, contexts: list[str], gen_kwargs: dict) -> list[str]:
    """The continuations of `contexts` that one set of lm-eval's generation kwargs asks for."""
    kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
    ignored = sorted(set(kwargs) - set(_GEN_KWARGS))
    if ignored:
      logger.warning('gptjax ignores these generation kwargs: %s', ', '.join(ignored))
    until = handle_stop_sequences(kwargs['until'], eos=None)  # EOS itself ends decoding
    max_gen_toks = kwargs['max_gen_toks']
    temperature = float(kwargs['temperature']) if kwargs['do_sample'] else 0.0
    top_k, top_p = int(kwargs.get('top_k') or 0), float(kwargs.get('top_p') or 1.0)
    max_prompt = self.n_ctx - max_gen_toks
    if max_gen_toks < 1 or max_prompt < 1:
      raise UserError(
        f'max_gen_toks={max_gen_toks} must be 1 to n_ctx - 1 = {self.n_ctx - 1} (room for the '
        'prompt); set it with --gen_kwargs max_gen_toks=N'
      )
    prompts = [[self.tokenizer.bos_id, *self.tokenizer.encode(c)][-max_prompt:] for c in contexts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar prefills
    texts = [''] * len(prompts)
    for start in range(0, len(order), self.batch_size):
      chunk = order[start : start + self.batch_size]
      batch = [prompts[i] for i in chunk]
      batch += [batch[0]] * (self.batch_size - len(batch))  # one shape: one compilation
      rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), self._generate_calls)
      self._generate_calls += 1
      new_ids = sampling.generate_batch(
        self.model,
        self.params,
        batch,
        max_gen_toks,
        rng,
        temperature,
        top_k,
        top_p,
        self.tokenizer.eos_id,
      )
      for i, ids in zip(chunk, new_ids):
        texts[i] = postprocess_generated_text(self.tokenizer.decode(ids), until, None)
    return texts
