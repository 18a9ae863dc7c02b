"""Fine-tune a pre-trained run on a task: a GPT as GPT-1 does it, a BERT as BERT does it.

  python -m gptjax.finetune --config finetune --workdir runs/ft_next_line \\
      --config.finetune.init_from=runs/default --config.finetune.task=stdlib_next_line

init_from may hold a GPT or a BERT run (model.architecture in its config.json; the
encoder-decoder cannot be fine-tuned). A BERT has no auxiliary LM loss: add
--config.finetune.lm_coef=0 (the shipped configs have GPT-1's 0.5, which a BERT refuses).

--config is a config file or a shipped config's name: finetune (the paper's settings) or
finetune:cpu (small models on a CPU); any field can be overridden with --config.a.b=value.
--workdir is a new directory for the run; it ends with the results as one JSON line. The same
command resumes an interrupted run from its workdir, and prints a finished one's results. How
examples become sequences, the head and the objective: gptjax/downstream/finetuning.py (and
backbones.py beside it, for what differs between a GPT and a BERT).
"""

import json

import jax
from absl import flags

from gptjax import cli
from gptjax.downstream import finetuning
from gptjax.training import sharding

_CONFIG = cli.define_config_flag(
  help_text="A fine-tuning config file, or a shipped one's name (finetune, finetune:cpu)."
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'A new directory for the fine-tuning run (or its own, to resume it).'
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  cli.positional(argv)
  config = _CONFIG.value
  if 'distributed' in config and config.distributed.initialize:  # a config may have none
    sharding.initialize_distributed(config.distributed)
  results = finetuning.finetune(config, _WORKDIR.value)
  if jax.process_index() == 0:
    print(json.dumps(results))


if __name__ == '__main__':
  cli.run(main, _CONFIG)
