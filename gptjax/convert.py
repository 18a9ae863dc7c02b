"""Turn other checkpoints into gptjax workdirs, and gptjax runs into Hugging Face checkpoints.

  python -m gptjax.convert hf_gpt2 --hf_dir ~/models/gpt2 --workdir runs/gpt2
  python -m gptjax.convert to_hf --workdir runs/tiny --out exported/tiny

hf_gpt2 reads a Hugging Face GPT-2 directory (config.json, model.safetensors or pytorch_model.bin,
vocab.json and merges.txt) and writes what python -m gptjax.main leaves behind: config.json, the
tokenizer and a step-0 checkpoint with a fresh optimizer state, for python -m gptjax.sample (and
evaluation or fine-tuning) to start from. See gptjax.models.hf.convert_gpt2.

to_hf writes the latest checkpoint of a GPT run as a new directory that transformers'
from_pretrained reads (GPT2LMHeadModel for pre-LN, OpenAIGPTLMHeadModel for post-LN models, and
the tokenizer): the same logits and token ids. A model feature those classes cannot express is
one error line, and nothing is written. See gptjax.models.hf_export.
"""

from absl import flags

from gptjax import cli, configuration
from gptjax.errors import UserError
from gptjax.models import accounting

_HF_DIR = flags.DEFINE_string(
  'hf_dir', None, 'hf_gpt2: Hugging Face GPT-2 directory on local disk.'
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'hf_gpt2: new gptjax workdir to write; to_hf: the run to export.'
)
_OUT = flags.DEFINE_string('out', None, 'to_hf: new (or empty) directory to write.')

_USAGE = {
  'hf_gpt2': ('python -m gptjax.convert hf_gpt2 --hf_dir DIR --workdir DIR', (_HF_DIR, _WORKDIR)),
  'to_hf': ('python -m gptjax.convert to_hf --workdir DIR --out DIR', (_WORKDIR, _OUT)),
}


def main(argv: list[str]) -> None:
  command = argv[1:]
  if len(command) != 1 or command[0] not in _USAGE:
    cli.fail(
      f'say what to convert: {" or ".join(usage for usage, _ in _USAGE.values())} '
      f'(got {" ".join(command) or "nothing"})',
      status=2,
    )
  usage, required = _USAGE[command[0]]
  missing = [f'--{flag.name}' for flag in required if not flag.value]
  if missing:
    cli.fail(f'{command[0]} needs {" and ".join(missing)}: {usage}', status=2)
  try:  # both directions read or write Hugging Face's formats: the [hf] extra
    from gptjax.models import hf, hf_export
  except ImportError as e:
    raise UserError(f"{command[0]} needs the [hf] extra ({e}): pip install 'gptjax[hf]'") from None
  if command[0] == 'to_hf':
    print(hf_export.export(_WORKDIR.value, _OUT.value))
    return
  config = hf.convert_gpt2(_HF_DIR.value, _WORKDIR.value)
  model = configuration.model_config(config, config.tokenizer.vocab_size)
  print(
    f'wrote {_WORKDIR.value}: {model.n_layers} layers, d_model {model.d_model}, '
    f'{accounting.count_params(model).total:,} parameters, {model.vocab_size:,} tokens '
    f'(the GPT-2 vocabulary and 3 fine-tuning markers)'
  )


if __name__ == '__main__':
  cli.run(main)
