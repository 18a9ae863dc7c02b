"""python -m gptjax.bench: how fast a config trains or decodes (gptjax/training/benchmark.py)."""
from absl import app

from gptjax.cli import parse_flags
from gptjax.training import benchmark

if __name__ == '__main__':
  app.run(benchmark.main, flags_parser=lambda argv: parse_flags(argv, benchmark._CONFIG))
