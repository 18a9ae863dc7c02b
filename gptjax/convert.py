"""Turn other checkpoints into gptjax workdirs.

  python -m gptjax.convert hf_gpt2 --hf_dir ~/models/gpt2 --workdir runs/gpt2

hf_gpt2 reads a Hugging Face GPT-2 directory (config.json, model.safetensors or pytorch_model.bin,
vocab.json and merges.txt) and writes what python -m gptjax.main leaves behind: config.json, the
tokenizer and a step-0 checkpoint with a fresh optimizer state, for python -m gptjax.sample (and
evaluation or fine-tuning) to start from. See gptjax.models.hf.convert_gpt2.
"""

from absl import flags

from gptjax import cli, configuration
from gptjax.models import accounting, hf

_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Hugging Face GPT-2 directory on local disk.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'New gptjax workdir to write.')
flags.mark_flags_as_required(['hf_dir', 'workdir'])


def main(argv: list[str]) -> None:
  if argv[1:] != ['hf_gpt2']:
    cli.fail(
      'say what to convert: python -m gptjax.convert hf_gpt2 --hf_dir DIR --workdir DIR '
      f'(got {" ".join(argv[1:]) or "nothing"})',
      status=2,
    )
  config = hf.convert_gpt2(_HF_DIR.value, _WORKDIR.value)
  model = configuration.model_config(config, config.tokenizer.vocab_size)
  print(
    f'wrote {_WORKDIR.value}: {model.n_layers} layers, d_model {model.d_model}, '
    f'{accounting.count_params(model).total:,} parameters, {model.vocab_size:,} tokens '
    f'(the GPT-2 vocabulary and 3 fine-tuning markers)'
  )


if __name__ == '__main__':
  cli.run(main)
