"""Train: python -m gptjax.main --config default --workdir runs/default

--config is a config file or a shipped config's name (gptjax/configs/); any field can be
overridden: --config.model.n_layers=2 --config.train.steps=100. Running the same command again
resumes from the workdir's latest checkpoint. After SIGTERM (a preemption) the run saves a
checkpoint and exits with status 143.
"""

from absl import flags

from gptjax import cli
from gptjax.training import sharding, trainer

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Directory for the tokenizer, token caches, checkpoints and metrics.'
)
_START_OVER = flags.DEFINE_bool(
  'start_over',
  False,
  'Train from step 0 a workdir whose checkpoints were all set aside as damaged (in '
  'corrupt_checkpoints/); without it such a workdir is refused.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  cli.positional(argv)
  config = _CONFIG.value
  if config.distributed.initialize:
    sharding.initialize_distributed(config.distributed)
  trainer.train_and_evaluate(config, _WORKDIR.value, start_over=_START_OVER.value)


if __name__ == '__main__':
  cli.run(main, _CONFIG)
