"""Compile time of the train step against depth, with and without nn.scan over the layers.

  python -m experiments.bench_compile > experiments/results/compile_time_cpu.json

The model is 4 heads wide with d_model 128, 128 tokens x 8 sequences, 4,096-token vocabulary; only
the depth changes. Unrolled, XLA compiles every block separately; scanned, it compiles one.
"""

import json

from absl import app, logging

from gptjax.cli import parse_flags
from gptjax.configs import default
from gptjax.training import benchmark

DEPTHS = (2, 6, 12, 24)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  rows = []
  for scan in (False, True):
    for depth in DEPTHS:
      config = default.get_config()
      benchmark.apply_shape(config, f'{depth},4,128,128,8,4096')
      config.model.scan_layers = scan
      report = benchmark.bench_train(config, steps=2, warmup=1)
      rows.append(
        {
          'n_layers': depth,
          'scan_layers': scan,
          'compile_s': report['compile_s'],
          'step_ms': report['step_ms'],
        }
      )
  for scan in (False, True):
    times = {row['n_layers']: row['compile_s'] for row in rows if row['scan_layers'] == scan}
    rows.append({'scan_layers': scan, 'compile_24_over_2': times[24] / times[2]})
  print(json.dumps(rows, indent=1))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
