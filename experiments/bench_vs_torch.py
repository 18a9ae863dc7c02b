"""gptjax's train step against the PyTorch reference on the same machine and shapes.

  python -m experiments.bench_vs_torch --torch_compile > experiments/results/bench_vs_torch_cpu.json

For each round and shape it runs ../shared/bench/torch_gpt_ref.py (nanoGPT's architecture in
PyTorch eager, float32, AdamW, clipping; --torch_compile adds a torch.compile run) and then
`python -m gptjax.bench --shape ... --json`, one after the other, so that both see the same
machine. Reported per shape: the median tokens/s of each over the rounds and the median of the
per-round ratios gptjax / PyTorch. A busy machine slows both; the load average is recorded.

--dtype=bfloat16 times gptjax with model.dtype=bfloat16 and adds the reference run under
torch.autocast(bfloat16), PyTorch's own mixed precision, as the like-for-like comparison
('torch_bf16', 'ratio_bf16'); 'ratio' stays against the float32 reference.

  python -m experiments.bench_vs_torch --dtype=bfloat16 --torch_compile \
      > experiments/results/bench_vs_torch_bf16_cpu.json
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

from gptjax.cli import parse_flags
from gptjax.training.benchmark import COMPARISON_SHAPES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TORCH_REF = flags.DEFINE_string(
  'torch_ref',
  os.path.join(REPO, '..', 'shared', 'bench', 'torch_gpt_ref.py'),
  'The PyTorch reference script.',
)
_TORCH_PYTHON = flags.DEFINE_string(
  'torch_python', sys.executable, 'A Python with torch installed.'
)
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False, 'Also time torch.compile.')
_DTYPE = flags.DEFINE_enum(
  'dtype',
  'float32',
  ['float32', 'bfloat16'],
  "gptjax's model.dtype; bfloat16 also times the reference under torch.autocast.",
)
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternations of the two per shape.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per run.', lower_bound=1)
_GPTJAX_ARGS = flags.DEFINE_multi_string(
  'gptjax_arg',
  [],
  'Extra gptjax.bench arguments, e.g. --gptjax_arg=--config.model.attention_impl=einsum',
)


# Runs the script named by its first argument inside torch.autocast(bfloat16).
_UNDER_AUTOCAST = (
  'import runpy, sys, torch; sys.argv = sys.argv[1:]\n'
  "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
  "  runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _torch(shape: tuple[int, ...], compile_: bool, autocast: bool = False) -> float:
  layers, heads, d_model, seq, batch, vocab = shape
  command = [
    _TORCH_PYTHON.value,
    *(['-c', _UNDER_AUTOCAST] if autocast else []),
    _TORCH_REF.value,
    '--layers',
    str(layers),
    '--heads',
    str(heads),
    '--d',
    str(d_model),
    '--seq',
    str(seq),
    '--batch',
    str(batch),
    '--vocab',
    str(vocab),
    '--steps',
    str(_STEPS.value),
  ] + (['--compile'] if compile_ else [])
  out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
  fields = dict(item.split('=') for item in out.split())
  return float(fields['tokens_per_s'])


def _gptjax(shape: tuple[int, ...]) -> dict:
  command = [
    sys.executable,
    '-m',
    'gptjax.bench',
    '--shape',
    ','.join(map(str, shape)),
    '--steps',
    str(_STEPS.value),
    '--json',
    f'--config.model.dtype={_DTYPE.value}',
    *_GPTJAX_ARGS.value,
  ]
  return json.loads(
    subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
  )


def main(argv: list[str]) -> None:
  del argv
  runs = {shape: [] for shape in COMPARISON_SHAPES}
  for _ in range(_ROUNDS.value):
    for shape in COMPARISON_SHAPES:
      row = {'torch': _torch(shape, compile_=False)}
      if _TORCH_COMPILE.value:
        row['torch_compile'] = _torch(shape, compile_=True)
      if _DTYPE.value == 'bfloat16':
        row['torch_bf16'] = _torch(shape, compile_=False, autocast=True)
      report = _gptjax(shape)
      row.update(
        gptjax=report['tokens_per_s'],
        mfu=report['mfu'],
        compile_s=report['compile_s'],
        load_average_1m=report['load_average_1m'],
      )
      runs[shape].append(row)
      print(f'{shape}: {row}', file=sys.stderr)
  results = []
  for shape, rows in runs.items():
    result = {'shape': dict(zip(('layers', 'heads', 'd_model', 'seq', 'batch', 'vocab'), shape))}
    for key in rows[0]:
      result[key] = statistics.median(row[key] for row in rows)
    result['ratio'] = statistics.median(row['gptjax'] / row['torch'] for row in rows)
    for reference in ('torch_compile', 'torch_bf16'):
      if reference in rows[0]:
        result['ratio' + reference.removeprefix('torch')] = statistics.median(
          row['gptjax'] / row[reference] for row in rows
        )
    results.append(result)
  print(
    json.dumps(
      {
        'rounds': _ROUNDS.value,
        'steps': _STEPS.value,
        'dtype': _DTYPE.value,
        'gptjax_args': _GPTJAX_ARGS.value,
        'cpu_count': os.cpu_count(),
        'results': results,
      },
      indent=1,
    )
  )


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
