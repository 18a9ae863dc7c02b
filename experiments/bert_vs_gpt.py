"""BERT vs GPT in miniature: pre-train a bidirectional masked-LM encoder (BERT) and a
left-to-right decoder (GPT) of the same size on the same compute, fine-tune both on the built-in
classification tasks under several seeds, and see which fine-tunes better.

  python -m experiments.bert_vs_gpt              # pre-train, fine-tune, write the results
  python -m experiments.bert_vs_gpt --gpt_lm     # also GPT with the auxiliary LM loss (0.5)

Hypothesis (Devlin et al. 2019, sections 1 and 5.1): a bidirectional encoder pre-trained with the
masked-LM objective fine-tunes better on classification than a left-to-right LM of the same size,
since every position (and [CLS]) sees the whole input rather than only its left context.

Setup. Both models are get_config(architecture) below: the byte tokenizer, 2 pre-LN blocks,
d_model 64, 4 heads, d_ff 256, n_ctx = seq_len 64, learned positions; the default corpus (the
standard library's source, data.source='stdlib'); 3000 steps of 16 windows (1024 tokens, 3.1M in
all); AdamW with the same schedule and the same peak lr for both, experiments/isoflop_study.py's
rule for the GPT, 1e-2 * 32 / d_model = 5e-3 (the simplest fair choice: one setting, not tuned
for either; gptjax/configs/bert_tiny.py's 2e-3 is for its own width and batch). Each is
pre-trained by
  python -m gptjax.main --config experiments/bert_vs_gpt.py:ARCH --workdir runs/bert_vs_gpt/ARCH
which resumes an unfinished workdir; a finished one (checkpoints/3000) is not run again.

Equal N, equal compute. The blocks (attention, MLP, LayerNorms) are the same shapes in both, so
the non-embedding parameter count N (gptjax/models/accounting.py) of the Transformer is equal;
BERT's masked-LM head adds a Dense and a LayerNorm (d^2 + 3d) and a per-vocabulary bias (V), which
accounting counts as non-embedding too: both N are printed and written to results.json (the
difference is ~4%, and that head is not used in fine-tuning). With the same seq_len, batch and
steps, both see the same D tokens, and the training FLOPs 6 N D plus the attention term
6 n_layers seq_len d_model per token are the same (BERT's attention is not causal, but the
convention counts the full L x L product for both). BERT's MLM loss covers only the 15% of
positions chosen for masking (bert.mlm_probability), though its FLOPs cover all of them: per FLOP
it gets fewer prediction targets than the GPT, which predicts every next token; that is the
objective's cost, and part of what is compared. BERT's windows are [CLS] w_0 .. w_61 [SEP]
(gptjax/models/bert.py), two tokens of text fewer than the GPT's 64 per window.

Fine-tuning. Each pre-trained model is fine-tuned with gptjax/configs/finetune.py:cpu on the three
classification-like built-in tasks (stdlib_test_or_lib: classification; stdlib_same_file:
similarity, a pair task; stdlib_next_line: multiple choice) under seeds 0, 1, 2 (config.seed: the
head's init, dropout, the order of examples and the built-in task's examples), into
runs/bert_vs_gpt/ft/<task>/<model>/seed<k>, through experiments/gpt1_finetune.py's run_once (a run
whose results.json exists is not run again). BERT: [CLS] a [SEP] b [SEP] rows with segment ids,
the head on [CLS] (gptjax/downstream/backbones.py); it has no auxiliary LM loss, so
finetune.lm_coef=0. The GPT is fine-tuned with lm_coef=0 too, so that the comparison isolates the
architecture and pre-training objective rather than GPT-1's auxiliary loss (--gpt_lm adds the GPT
with lm_coef 0.5 as a third model). Note that BERT's segment-1 embedding was never trained in
pre-training (every pre-training window is one segment), so pair tasks start it from its init.

Results: experiments/results/bert_vs_gpt/results.json, written after every run: the two N and the
compute, each run's row, per (task, model) the mean and sd over seeds of the test and validation
accuracy, and per task BERT minus GPT (lm_coef 0): the difference of means, its standard error from
the seed sd sqrt(sd1^2/n1 + sd2^2/n2), and the verdict 'exceeds noise' only when |diff| > 2 se, and
the paired view (the seed draws the task's examples too, so the runs of one seed share their data:
the mean of the per-seed differences and its se); bert_vs_gpt.png: mean +- sd per task and model,
the seeds as dots.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from absl import logging

from experiments import gpt1_finetune
from gptjax import configuration
from gptjax.cli import reported
from gptjax.configs import default
from gptjax.configs import finetune as finetune_config
from gptjax.downstream import finetuning
from gptjax.models import accounting
from gptjax.scaling.sweep import parse_override, run_config

NAME = 'bert_vs_gpt'
D_MODEL, STEPS, BATCH, SEQ_LEN = 64, 3000, 16, 64
CONVENTION = '6ND+attn'
MODELS = {  # name -> (pre-training run, lm_coef)
  'gpt_lm0': ('gpt', 0.0),
  'bert': ('bert', 0.0),
  'gpt_lm0.5': ('gpt', 0.5),
}


def get_config(architecture: str = 'gpt'):
  """The pre-training config of `architecture` ('gpt' or 'bert'): the same in everything else."""
  if architecture not in ('gpt', 'bert'):
    raise ValueError(f"unknown architecture {architecture!r}; use 'gpt' or 'bert'")
  config = default.get_config()
  config.model.update(
    architecture=architecture,
    n_layers=2,
    d_model=D_MODEL,
    n_heads=4,
    d_ff=4 * D_MODEL,
    n_ctx=SEQ_LEN,
    norm='pre',
  )
  config.tokenizer.kind = 'byte'
  config.bert.type_vocab_size = 2  # [CLS] a [SEP] b [SEP] in fine-tuning; unused by the GPT
  config.train.update(
    seq_len=SEQ_LEN,
    global_batch_size=BATCH,
    steps=STEPS,
    lr=1e-2 * 32 / D_MODEL,
    warmup_steps=100,
    b2=0.99,
    log_every=100,
    eval_every=1000,
    eval_batches=16,
    final_eval_batches=64,
    checkpoint_every=1000,
    keep_checkpoints=1,
  )
  config.sample.max_new_tokens = 0
  return config


def pretrain(root: str, parallel: bool) -> dict:
  """Pre-trains runs/bert_vs_gpt/{gpt,bert} (those not finished), both at once when `parallel`;
  returns their wall times (kept in ROOT/ARCH.wall_s; None where unknown)."""
  procs, started = {}, {}
  for arch in ('gpt', 'bert'):
    workdir = os.path.join(root, arch)
    if os.path.isdir(os.path.join(workdir, 'checkpoints', str(STEPS))):
      continue
    command = [
      sys.executable,
      '-m',
      'gptjax.main',
      f'--config={os.path.abspath(__file__)}:{arch}',
      f'--workdir={workdir}',
    ]
    print(' '.join(command), flush=True)
    os.makedirs(workdir, exist_ok=True)
    log = open(os.path.join(root, f'{arch}.log'), 'a')
    started[arch] = time.time()
    procs[arch] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    if not parallel:
      _wait(procs[arch], arch, root)
  for arch, proc in procs.items():
    _wait(proc, arch, root)
    with open(os.path.join(root, f'{arch}.wall_s'), 'w') as f:
      f.write(f'{time.time() - started[arch]:.1f}\n')
  walls = {}
  for arch in ('gpt', 'bert'):
    path = os.path.join(root, f'{arch}.wall_s')
    walls[arch] = float(open(path).read()) if os.path.exists(path) else None
  return walls


def _wait(proc: subprocess.Popen, arch: str, root: str) -> None:
  if proc.wait():
    raise SystemExit(f'pre-training {arch} failed (rc {proc.returncode}); see {root}/{arch}.log')


def sizes(root: str) -> dict:
  """Per pre-training run: N (non-embedding), all parameters, and the training compute."""
  out = {}
  for arch in ('gpt', 'bert'):
    run, tokenizer = finetuning.read_run(os.path.join(root, arch))
    model = configuration.model_config(run, tokenizer.vocab_size)
    count = accounting.count_params(model)
    tokens = run.train.steps * run.train.global_batch_size * run.train.seq_len
    out[arch] = {
      'non_embedding_params': count.non_embedding,
      'total_params': count.total,
      'vocab_size': model.vocab_size,
      'tokens': tokens,
      'compute': accounting.training_compute(model, tokens, run.train.seq_len, CONVENTION),
      'convention': CONVENTION,
    }
    print(
      f'{arch}: N = {count.non_embedding:,} non-embedding ({count.total:,} in all), '
      f'D = {tokens:,} tokens, C = {out[arch]["compute"]:.3e} FLOPs ({CONVENTION})',
      flush=True,
    )
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog=f'python -m experiments.{NAME}', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument(
    '--tasks',
    default='stdlib_test_or_lib,stdlib_same_file,stdlib_next_line',
    help='comma-separated built-in tasks (or JSONL specs)',
  )
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated config.seed values')
  parser.add_argument('--gpt_lm', action='store_true', help='also the GPT with lm_coef 0.5')
  parser.add_argument('--sequential', action='store_true', help='pre-train one at a time')
  parser.add_argument('--pretrain_only', action='store_true')
  parser.add_argument('--root', default=os.path.join('runs', NAME))
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='a fine-tuning config override, e.g. finetune.epochs=2 (repeatable)',
  )
  parser.add_argument('--out', default=os.path.join('experiments', 'results', NAME))
  parser.add_argument(
    '--report_only',
    action='store_true',
    help='run no fine-tuning: write the results of the finished runs only',
  )
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  with reported():
    walls = pretrain(args.root, parallel=not args.sequential)
    header = {'pretraining': sizes(args.root), 'pretraining_wall_s': walls}
    if args.pretrain_only:
      return
    models = ['gpt_lm0', 'bert'] + (['gpt_lm0.5'] if args.gpt_lm else [])
    base = run_config(finetune_config.get_config('cpu'), dict(map(parse_override, args.set)), NAME)
    header['config'] = base.to_dict()
    rows = []
    for seed in [int(s) for s in args.seeds.split(',')]:
      for task in args.tasks.split(','):
        for model in models:
          arch, lm_coef = MODELS[model]
          workdir = os.path.join(
            args.root, 'ft', os.path.basename(task.rstrip('/')), model, f'seed{seed}'
          )
          overrides = {
            'seed': seed,
            'finetune.init_from': os.path.join(args.root, arch),
            'finetune.task': task,
            'finetune.lm_coef': lm_coef,
          }
          label = f'{task} / {model} / seed {seed}'
          result = gpt1_finetune.run_once(base, overrides, workdir, label, args.report_only)
          if result is None:
            continue
          rows.append(
            {
              'task': task,
              'model': model,
              'seed': seed,
              'lm_coef': lm_coef,
              'workdir': workdir,
              **result,
            }
          )
          write(args.out, header, rows)
    print(f'wrote {args.out}/results.json and {NAME}.png')


def write(out: str, header: dict, rows: list[dict]) -> None:
  summary = gpt1_finetune.summarize(rows, key='model')
  contrasts = {}
  for task in dict.fromkeys(r['task'] for r in rows):
    for gpt in ('gpt_lm0', 'gpt_lm0.5'):
      c = gpt1_finetune.contrast(summary, task, 'bert', gpt, key='model', rows=rows)
      if c is not None:
        contrasts.setdefault(f'bert_vs_{gpt}', []).append(c)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({**header, 'rows': rows, 'summary': summary, 'contrasts': contrasts}, f, indent=1)
  gpt1_finetune.plot(
    rows,
    summary,
    os.path.join(out, f'{NAME}.png'),
    key='model',
    title='fine-tuning BERT vs GPT (same N, same pre-training compute)',
  )


if __name__ == '__main__':
  main()
