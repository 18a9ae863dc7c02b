"""Induction heads in miniature (Olsson et al. 2022): a 2-block model trained where copying pays,
and a 1-block control.

  python -m gptjax.sweep run experiments/induction_heads.py --root runs/induction_heads_symbols \\
      --convention 6ND+attn+embed
  python -m experiments.induction_heads runs/induction_heads_symbols --stdlib 'runs/icl_models/*'
  python -m experiments.induction_heads --plot_only   # again from results.json

Corpus: REPEATS, lines of a random string of 8-24 SYMBOLS (the 94 printable ASCII characters
but the space) written twice ("k#7Qk#7Q"), made deterministically from a seed (23 MB, more than
the runs read, so no window repeats), once, by get_config, in runs/_corpora/ (its name holds its
settings, so another corpus is another file and another token cache). Half of each line can be
predicted by copying, nothing else but the line ends.

Models: experiments/icl_models.py's setup (byte tokenizer, 4d_model MLP, beta2 0.99, warmup and
cosine) with d_model 64, rotary positions (a previous-token head is then one fixed rotation, not
a shift learned position by position), windows of 128 bytes, 32 a step (4,096 tokens), lr 1e-2,
5,000 steps: 2 blocks (L2_d64), which can compose a previous-token head with an induction head,
and 1 block (L1_d64), which cannot. A checkpoint every STEPS // 40 steps, all kept.

Evaluation (the command line here): at every checkpoint of each model, the repeated-random-tokens
probe (gptjax/downstream/icl.py's copy_score: the mean loss on the second occurrence of a random
string of --half SYMBOLS minus that on the first; -ln 94 = -4.54 for a perfect copier, 0 for a
model that does not copy), with, from the attention on 16 of its windows, each block's largest
mean attention of a head to the previous token and to the token to copy (Olsson et al.'s prefix
matching; icl.induction_attention) and each head's most attended offset; and for the synthetic
runs also the ICL score on their validation windows (loss at position --late minus at --early),
and at their final checkpoint the probe and the offsets at each repeat length of
--offset_halves, and the probe with each head knocked out alone (knockouts). --stdlib adds the
probe of other workdirs (the stdlib-trained runs/icl_models/*), read only. Writes
experiments/results/induction_heads/results.json (a row per model and checkpoint) and
induction_heads.png.

Hypothesis: the 2-block model's probe sits on a plateau near 0 and then falls abruptly (the
induction-head phase change), to well below -1 nats; the 1-block model's falls little or slowly.

The first design (experiments/results/induction_heads_letters/: strings of 20-60 lowercase
letters, windows of 256 bytes, 16 a step, lr 5e-3; 4,000 steps with learned positions, 3,000
with rotary) gave no phase change: the 2-block models stayed near the unigram loss. With 26
letters, each recurs about ten times in a window, so the current token alone does not say where
to copy from.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import isoflop_study  # noqa: E402  (the setup is that study's)

from gptjax.data import cache  # noqa: E402

NAME = 'induction_heads'

SEQ_LEN, BATCH, STEPS, WIDTH, LR = 128, 32, 5_000, 64, 1e-2
PROBE_HALF = 20  # within the corpus's string lengths
# name: (blocks, steps); L2_d64_long, twice as long, is the 2-block model given more time to
# leave the plateau where the 1-block model also sits (its learning rate decays more slowly).
MODELS = {'L2_d64': (2, STEPS), 'L1_d64': (1, STEPS), 'L2_d64_long': (2, 2 * STEPS)}
# The strings' symbols: the 94 printable ASCII characters but the space, so that a symbol recurs
# about once elsewhere in a window and matching the current token finds where to copy from.
SYMBOLS = ''.join(chr(c) for c in range(33, 127))
CORPUS_SEED, CORPUS_LINES, SHORTEST, LONGEST = 0, 700_000, 8, 24
CORPUS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'runs')
REPEATS = os.path.join(
  CORPUS_DIR,
  '_corpora',
  f'repeated_symbols{len(SYMBOLS)}_{SHORTEST}-{LONGEST}_{CORPUS_LINES}_seed{CORPUS_SEED}.txt',
)


def repeated_strings(lines: int, shortest: int, longest: int, seed: int) -> str:
  """`lines` lines, each a random string of shortest..longest SYMBOLS twice over."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(shortest, longest + 1, lines)
  symbols = np.frombuffer(SYMBOLS.encode(), np.uint8)[rng.integers(0, len(SYMBOLS), lengths.sum())]
  text = symbols.tobytes().decode()
  ends = np.cumsum(lengths)
  return ''.join(text[end - n : end] * 2 + '\n' for end, n in zip(ends, lengths))


def ensure_corpus(path: str = REPEATS) -> str:
  """The corpus file, written (atomically) unless it is there already."""
  if not os.path.isfile(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cache.write_atomic(path, repeated_strings(CORPUS_LINES, SHORTEST, LONGEST, CORPUS_SEED))
  return path


def get_config():
  config = isoflop_study.get_config()
  config.model.update(
    n_ctx=SEQ_LEN,
    pos_emb='rotary',
    **{k.split('.')[1]: v for k, v in isoflop_study.shape(WIDTH).items()},
  )
  config.data.update(source='text_files', text_files=ensure_corpus())
  config.train.update(
    seq_len=SEQ_LEN,
    global_batch_size=BATCH,
    steps=STEPS,
    lr=LR,
    eval_every=STEPS // 10,
    eval_batches=16,
    final_eval_batches=64,
    checkpoint_every=STEPS // 40,
    keep_checkpoints=40,
    log_every=25,
    warmup_steps=100,
  )
  return config


def get_runs():
  runs = []
  for name, (layers, steps) in MODELS.items():
    overrides = {'model.n_layers': layers}
    if steps != STEPS:
      overrides.update(
        {
          'train.steps': steps,
          'train.eval_every': steps // 10,
          'train.checkpoint_every': steps // 40,
        }
      )
    runs.append((name, overrides))
  return runs


def phase_change(rows: list[dict]) -> dict:
  """Where a model's probe fell: its first, plateau (the highest after the first checkpoint, at
  or before the largest fall) and final values, and the checkpoint interval of the largest fall
  between consecutive checkpoints."""
  rows = sorted(rows, key=lambda r: r['step'])
  scores = [r['copy_score'] for r in rows]
  falls = [scores[i] - scores[i + 1] for i in range(len(scores) - 1)]
  i = int(np.argmax(falls)) if falls else 0
  return {
    'first': {'step': rows[0]['step'], 'copy_score': scores[0]},
    'plateau': max(scores[1 : i + 1] or scores[:1]),
    'largest_fall': {
      'from_step': rows[i]['step'],
      'to_step': rows[min(i + 1, len(rows) - 1)]['step'],
      'tokens': rows[min(i + 1, len(rows) - 1)]['tokens'],
      'fall': falls[i] if falls else 0.0,
    },
    'final': {'step': rows[-1]['step'], 'copy_score': scores[-1]},
  }


def knockouts(workdir: str, half: int, n_windows: int, skip: int, symbols: str) -> dict:
  """The probe's copy score at a workdir's newest checkpoint, intact ('none') and with each head
  knocked out alone (icl.without_heads), keyed 'block B head H' (B from 1)."""
  from gptjax.downstream import icl
  from gptjax.training.state import read_run

  _, tokenizer = read_run(workdir, 'gpt')
  windows_NxL1 = icl.repeated_random_windows(n_windows, half, icl.copy_ids(tokenizer, symbols))

  def score(model_config, params) -> dict:
    def copy(p) -> float:
      losses_NxL = icl.token_losses(icl.gpt_loss_fn(model_config, p), windows_NxL1)
      return icl.copy_score(losses_NxL, half, skip)['copy_score']

    scores = {'none': copy(params)}
    for block in range(model_config.n_layers):
      for head in range(model_config.n_heads):
        ablated = icl.without_heads(model_config, params, {block: [head]})
        scores[f'block {block + 1} head {head}'] = copy(ablated)
    return scores

  (row,) = icl.score_checkpoints(workdir, score, every_checkpoint=False)
  return row


def plot(rows: list[dict], path: str) -> None:
  from matplotlib.figure import Figure

  fig = Figure(figsize=(20, 4.2), layout='constrained')
  synthetic, attention, stdlib, curves = fig.subplots(1, 4)
  half, uniform = rows[0]['half'], np.log(rows[0]['probe_symbols'])  # a uniform guess's loss
  for i, workdir in enumerate(dict.fromkeys(r['workdir'] for r in rows)):
    model_rows = sorted((r for r in rows if r['workdir'] == workdir), key=lambda r: r['step'])
    last, colour = model_rows[-1], f'C{i % 10}'
    model = last['model']
    ax = synthetic if last['corpus'] == 'repeats' else stdlib
    tokens = [r['tokens'] for r in model_rows]
    ax.errorbar(
      tokens,
      [r['copy_score'] for r in model_rows],
      yerr=[r['copy_stderr'] for r in model_rows],
      marker='.',
      capsize=2,
      color=colour,
      label=f'{model}: copy score',
    )
    if 'icl_score' in last:
      ax.plot(
        tokens,
        [r['icl_score'] for r in model_rows],
        linestyle='--',
        color=colour,
        label=f'{model}: ICL score ({last["late"]} - {last["early"]})',
      )
    if last['corpus'] == 'repeats' and 'prefix_matching' in last:
      attention.plot(
        tokens,
        [r['prefix_matching'][-1] for r in model_rows],
        color=colour,
        label=f'{model}: prefix matching (block {len(last["prefix_matching"])})',
      )
      attention.plot(
        tokens,
        [r['previous_token'][0] for r in model_rows],
        linestyle='--',
        color=colour,
        label=f'{model}: previous token (block 1)',
      )
    curves.plot(
      range(len(last['copy_curve'])),
      last['copy_curve'],
      color=colour,
      label=f'{model} ({last["corpus"]}, step {last["step"]})',
    )
  for ax, corpus in ((synthetic, 'repeated random strings'), (stdlib, 'the standard library')):
    ax.axhline(0, color='grey', linestyle=':')
    ax.axhline(-uniform, color='grey', linestyle='--', linewidth=0.8)
    ax.set(
      xlabel='training tokens',
      ylabel='nats/token',
      title=f'trained on {corpus}:\ncopy score (repeat - first)',
    )
    ax.legend(fontsize='small')
  attention.set(
    xlabel='training tokens',
    ylabel='mean attention (largest head)',
    title='attention on the repeat:\nto the token to copy, and to the previous one',
    ylim=(0, 1),
  )
  attention.legend(fontsize='small')
  curves.axvline(half - 0.5, color='grey', linestyle=':')
  curves.axhline(uniform, color='grey', linestyle='--', linewidth=0.8)
  curves.set(
    xlabel=f'position t (predicting token t + 1; the repeat starts at {half})',
    ylabel='mean loss (nats/token)',
    title=f'final loss on {half} random symbols,\nthen the same again',
  )
  curves.legend(fontsize='small')
  fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
  from absl import logging

  from experiments.zero_shot_size import expand, saved_rows
  from gptjax.cli import reported
  from gptjax.downstream import icl

  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument(
    'workdirs',
    nargs='*',
    help='the runs trained here (paths or quoted globs; their sweep root '
    'stands for its runs): the probe and the ICL score',
  )
  parser.add_argument('--stdlib', nargs='*', default=[], help='other workdirs: the probe only')
  parser.add_argument('--half', type=int, default=PROBE_HALF, help='symbols per occurrence')
  parser.add_argument('--symbols', default=SYMBOLS, help="the probe's characters")
  parser.add_argument(
    '--offset_halves',
    default='10,16,20,24,40',
    help="the synthetic runs' final checkpoints: the probe and each head's most attended offset "
    'at these repeat lengths',
  )
  parser.add_argument('--windows', type=int, default=icl.COPY_WINDOWS, help='probe windows')
  parser.add_argument('--skip', type=int, default=icl.COPY_SKIP)
  parser.add_argument('--late', type=int, default=100, help='ICL score: the late position')
  parser.add_argument('--early', type=int, default=10, help='ICL score: the early position')
  parser.add_argument('--band', type=int, default=icl.BAND)
  parser.add_argument('--limit', type=int, default=200, help='ICL score: validation windows')
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
  parser.add_argument(
    '--plot_only', action='store_true', help='redraw from OUT/results.json; no workdir is read'
  )
  args = parser.parse_args(argv)
  if not (args.workdirs or args.stdlib) and not args.plot_only:
    parser.error('name the workdirs to evaluate, or pass --plot_only')
  logging.set_verbosity(logging.WARNING)
  with reported():
    results_path = os.path.join(args.out, 'results.json')
    if args.plot_only:
      rows = saved_rows(results_path)
    else:
      is_root = lambda w: os.path.isfile(os.path.join(w, 'results.jsonl'))  # a sweep's root
      synthetic = expand([os.path.join(w, '*') if is_root(w) else w for w in args.workdirs])
      rows = []
      for corpus, workdirs in (('repeats', synthetic), ('stdlib', expand(args.stdlib))):
        for workdir in workdirs:
          model = os.path.basename(os.path.normpath(workdir))
          probed = icl.copy_workdir(
            workdir, args.half, args.windows, args.skip, symbols=args.symbols
          )
          scored = {}
          if corpus == 'repeats':
            scored = {
              r['step']: r
              for r in icl.evaluate_workdir(
                workdir, args.late, args.early, args.band, every_checkpoint=True, limit=args.limit
              )
            }
          for i, result in enumerate(probed):
            row = {
              'model': model,
              'workdir': workdir,
              'corpus': corpus,
              'probe_symbols': len(args.symbols),
              **result,
            }
            if result['step'] in scored:
              row.update({k: v for k, v in scored[result['step']].items() if k != 'loss_curve'})
            if i < len(probed) - 1:
              row.pop('copy_curve')  # the final checkpoint's curve is plotted; the rest are not
            rows.append(row)
            icl_text = (
              f'; ICL score {row["icl_score"]:+.4f} ± {row["icl_stderr"]:.4f}'
              if 'icl_score' in row
              else ''
            )
            attention_text = (
              f'; prefix matching {row["prefix_matching"][-1]:.3f}, previous token '
              f'{row["previous_token"][0]:.3f}'
              if 'prefix_matching' in row
              else ''
            )
            print(
              f'{model} step {row["step"]} ({row["tokens"]:,} tokens): copy score '
              f'{row["copy_score"]:+.4f} ± {row["copy_stderr"]:.4f} (first {row["first_loss"]:.3f}'
              f', repeat {row["repeat_loss"]:.3f}){icl_text}{attention_text}',
              flush=True,
            )
      by_length = []
      for workdir in synthetic:
        for half in map(int, args.offset_halves.split(',')):
          (result,) = icl.copy_workdir(
            workdir,
            half,
            args.windows,
            min(args.skip, half - 2),
            every_checkpoint=False,
            symbols=args.symbols,
          )
          result.pop('copy_curve')
          by_length.append({'workdir': workdir, **result})
          offsets = [[(o, round(a, 2)) for o, a in b] for b in result.get('attention_offsets', [])]
          print(
            f'{workdir} step {result["step"]}, repeats of {half}: copy score '
            f'{result["copy_score"]:+.3f} (repeat {result["repeat_loss"]:.3f}); most attended '
            f'offset (mean attention) per block and head: {offsets}',
            flush=True,
          )
      ablations = []
      for workdir in synthetic:
        ablations.append(
          {
            'workdir': workdir,
            **knockouts(workdir, args.half, args.windows, args.skip, args.symbols),
          }
        )
        print(f'{workdir}: copy score with each head knocked out: {ablations[-1]}', flush=True)
      summary = {  # by workdir: the stdlib and the synthetic runs share names
        workdir: phase_change([r for r in rows if r['workdir'] == workdir])
        for workdir in dict.fromkeys(r['workdir'] for r in rows)
      }
      os.makedirs(args.out, exist_ok=True)
      with open(results_path, 'w') as f:
        json.dump(
          {
            'rows': rows,
            'summary': summary,
            'by_length': by_length,
            'knockouts': ablations,
            'settings': vars(args),
          },
          f,
          indent=1,
        )
      print(json.dumps(summary, indent=1))
    plot(rows, os.path.join(args.out, f'{NAME}.png'))
    print(f'wrote {args.out}/{"" if args.plot_only else "results.json and "}{NAME}.png')


if __name__ == '__main__':
  main()
