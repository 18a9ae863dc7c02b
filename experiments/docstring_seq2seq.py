"""The encoder-decoder on a real offline task: Python function source -> the first sentence of its
docstring, from this Python's standard library, validated on held-out modules
(gptjax/data/docstrings.py).

  python -m experiments.docstring_seq2seq --set train.steps=2000

Trains gptjax/configs/transformer_tiny.py (plus the --set overrides) in ROOT with the ordinary
training loop (a second run resumes or reuses it), then decodes every validation source greedily
and with beam search, and scores the outputs against the reference sentences: exact match
(whitespace normalised) and corpus BLEU (sacrebleu, default 13a tokenisation). A baseline that
always answers the most frequent training target puts the numbers in scale. Writes
experiments/results/docstring_seq2seq/results.json and examples.md (the first validation pairs
with both decodings).
"""

import argparse
import collections
import json
import os

import jax.numpy as jnp
import numpy as np
import sacrebleu
from absl import logging

from gptjax.cli import reported
from gptjax.configs import transformer_tiny
from gptjax.data import pairs
from gptjax.decoding import seq2seq
from gptjax.scaling.sweep import parse_override, run_config
from gptjax.training import trainer
from gptjax.training.state import load_run

NAME = 'docstring_seq2seq'


def decode_all(decode, tokenizer, sources_NxS: np.ndarray, batch_size: int) -> list[str]:
  """Texts of decode(source batch) for every row, in batches of batch_size (the last one padded)."""
  texts = []
  for start in range(0, len(sources_NxS), batch_size):
    batch = sources_NxS[start : start + batch_size]
    padded = np.concatenate([batch, np.repeat(batch[:1], batch_size - len(batch), axis=0)])
    ids_BxT = np.asarray(decode(jnp.asarray(padded)))[: len(batch)]
    texts.extend(tokenizer.decode(ids) for ids in ids_BxT)
  return texts


def score(outputs: list[str], references: list[str]) -> dict[str, float]:
  normalise = lambda text: ' '.join(text.split())
  exact = np.array([normalise(o) == normalise(r) for o, r in zip(outputs, references)])
  return {
    'exact_match': float(exact.mean()),
    'exact_match_stderr': float(exact.std() / np.sqrt(len(exact))),
    'bleu': sacrebleu.corpus_bleu(outputs, [references]).score,
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='a config override, e.g. train.steps=2000 (repeatable)',
  )
  parser.add_argument('--root', default=os.path.join('runs', NAME), help='the training workdir')
  parser.add_argument('--beam_size', type=int, default=4)
  parser.add_argument('--length_penalty', type=float, default=0.6)
  parser.add_argument('--batch_size', type=int, default=64, help='sources decoded at once')
  parser.add_argument('--examples', type=int, default=20, help='validation pairs in examples.md')
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    config = run_config(transformer_tiny.get_config(), dict(map(parse_override, args.set)), NAME)
    metrics = trainer.train_and_evaluate(config, args.root)
    tokenizer, model, params = load_run(args.root, 'encoder_decoder')
    _, data = pairs.load_tokenizer_and_pairs(config, args.root)
    sources_NxS, _ = pairs.split_row(np.asarray(data.val), data.source_len)
    references = [target for _, target in pairs.validation_pairs(config, args.root)]
    max_len = config.train.seq_len
    specials = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    outputs = {
      'greedy': decode_all(
        lambda s: seq2seq.greedy(model, params, s, max_len, *specials),
        tokenizer,
        sources_NxS,
        args.batch_size,
      ),
      f'beam{args.beam_size}': decode_all(
        lambda s: seq2seq.beam_search(
          model, params, s, max_len, args.beam_size, *specials, length_penalty=args.length_penalty
        ),
        tokenizer,
        sources_NxS,
        args.batch_size,
      ),
    }
    train_targets = [target for _, target in pairs.split_pairs(config.data)[0]]
    most_common = collections.Counter(train_targets).most_common(1)[0][0]
    outputs['baseline_most_common_target'] = [most_common] * len(references)
    results = {
      'config': config.to_dict(),
      'n_validation': len(references),
      'n_train': len(train_targets),
      'train_steps': config.train.steps,
      'eval_loss': metrics['eval_loss'],
      'eval_accuracy': metrics['eval_accuracy'],
      'seconds_train_steps': metrics['seconds_train_steps'],
      'scores': {name: score(texts, references) for name, texts in outputs.items()},
      'length_penalty': args.length_penalty,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(args.out, 'examples.md'), 'w') as f:
      f.write(f'# The first {args.examples} validation functions\n\n')
      val_pairs = pairs.validation_pairs(config, args.root)
      for i in range(min(args.examples, len(references))):
        first_line = val_pairs[i][0].splitlines()[0]
        f.write(
          f'- `{first_line}`\n  - reference: {references[i]}\n'
          f'  - greedy: {outputs["greedy"][i]}\n'
          f'  - beam {args.beam_size}: {outputs[f"beam{args.beam_size}"][i]}\n'
        )
    print(json.dumps(results['scores'], indent=1))


if __name__ == '__main__':
  main()
