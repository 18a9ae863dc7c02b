"""lm-eval's command line with gptjax's model registered:

  python -m gptjax.lm_eval --model gptjax --model_args workdir=runs/default \
      --tasks hellaswag,lambada_openai,arc_easy --batch_size 32

Every argument is lm-eval's own (python -m gptjax.lm_eval --help lists them; --include_path adds
task YAML files of your own). lm-eval 0.4.13 looks models up only in its registry, filled by
its own modules: it reads no entry points, and its --include_path is for tasks only. So the
`lm_eval` command cannot find an outside package's model; this module imports
gptjax.downstream.harness, which registers `gptjax`, then runs lm-eval's command line. Needs
the [eval] extra: pip install "gptjax[eval]".
"""

from gptjax import cli


def main() -> None:
  try:
    from lm_eval.__main__ import cli_evaluate  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    cli.fail(
      f'lm-eval is not installed ({e}); install the [eval] extra: pip install "gptjax[eval]"'
    )
  from gptjax.downstream import harness  # noqa: F401  # pylint: disable=import-outside-toplevel

  with cli.reported():  # a gptjax UserError (a bad workdir, a too-long answer) as one line
    cli_evaluate()


if __name__ == '__main__':
  main()
