"""Scaling-law fits, a sweep's report and a hold-out test, from the command line.

  python -m gptjax.scaling fit runs/X/results.jsonl --law chinchilla --bootstrap 200 [--json]
  python -m gptjax.scaling fit my_runs.csv --law kaplan_n --n_col params --loss_col loss
  python -m gptjax.scaling report runs/X [--out DIR] [--bootstrap 100]   # plots and report.md
  python -m gptjax.scaling holdout runs/X --hold_out largest [--law chinchilla]

fit fits one law (gptjax/scaling/laws.py: kaplan_n, kaplan_d, kaplan_c, isoflop, chinchilla) to a
sweep's results.jsonl (or its directory) or any JSONL or CSV file, with --bootstrap K confidence
intervals; report writes the plots and report.md of a sweep (gptjax/scaling/report.py); holdout
fits a law to all runs but those with the most compute and predicts those. A flag that does not
apply to the command given (--law to report, say) is refused.
"""

import json

from absl import flags

from gptjax import cli
from gptjax.scaling import formatting, laws, uncertainty
from gptjax.scaling.observations import observations, read_rows

_LAW = flags.DEFINE_enum(
  'law',
  None,
  laws.LAWS,
  'fit: the law to fit (required); holdout: the '
  'law to test (default chinchilla; not isoflop, which predicts no loss).',
)
_N_COL = flags.DEFINE_string('n_col', None, 'Column of parameters N (default N: non-embedding).')
_D_COL = flags.DEFINE_string(
  'd_col', None, 'Column of training tokens D (default D; C / (6N) if absent).'
)
_C_COL = flags.DEFINE_string(
  'c_col', None, 'Column of training FLOPs C (default C; 6ND if absent).'
)
_LOSS_COL = flags.DEFINE_string('loss_col', None, 'Column of the loss (default eval_loss).')
_IRREDUCIBLE = flags.DEFINE_bool('irreducible', False, 'kaplan laws: fit L = E + (x_c/x)^alpha.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
_BOOTSTRAP = flags.DEFINE_integer(
  'bootstrap',
  None,
  'Refit K resamples of the runs for confidence intervals (default 0 for fit, 100 for report).',
  lower_bound=0,
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap resamples.')
_OUT = flags.DEFINE_string('out', '', 'report: where to write (default: the sweep directory).')
_HOLD_OUT = flags.DEFINE_string(
  'hold_out',
  'largest',
  "holdout: 'largest' (the largest compute budget, the default) or a number of runs.",
)

_COLUMNS = ('n_col', 'd_col', 'c_col', 'loss_col')
# The flags each command reads; given to another command, a flag is refused.
_COMMANDS = {
  'fit': ('input', {'law', *_COLUMNS, 'irreducible', 'json', 'bootstrap', 'seed'}),
  'report': ('root', {'out', 'bootstrap', 'seed'}),
  'holdout': ('input', {'law', *_COLUMNS, 'irreducible', 'json', 'hold_out'}),
}
_OWN_FLAGS = ('law', *_COLUMNS, 'irreducible', 'json', 'bootstrap', 'seed', 'out', 'hold_out')


def main(argv: list[str]) -> None:
  command = argv[1] if len(argv) > 1 else ''
  if command not in _COMMANDS:
    cli.fail(
      f'give a command, one of {", ".join(_COMMANDS)} (got {command or "none"}; see --help)',
      status=2,
    )
  positional, reads = _COMMANDS[command]
  _, path = cli.positional(argv, 'command', positional)
  for name in _OWN_FLAGS:
    if flags.FLAGS[name].present and name not in reads:
      cli.fail(f'--{name} does not apply to {command} (see --help)', status=2)
  if command == 'report':
    from gptjax.scaling import report  # imported here: matplotlib is slow to import

    bootstrap_k = 100 if _BOOTSTRAP.value is None else _BOOTSTRAP.value
    print(f'wrote {report.write_report(path, _OUT.value or path, bootstrap_k, _SEED.value)}')
    return
  law = _LAW.value
  if command == 'fit' and law is None:
    cli.fail('fit needs --law, one of ' + ', '.join(laws.LAWS), status=2)
  if command == 'holdout':
    law = law or 'chinchilla'
    if law == 'isoflop':
      cli.fail(
        '--law=isoflop: isoflop predicts no loss for a run; holdout takes chinchilla or a '
        'kaplan law',
        status=2,
      )
  named = {f'--{k}': flags.FLAGS[k].value for k in _COLUMNS if flags.FLAGS[k].value is not None}
  loss_col = _LOSS_COL.value or 'eval_loss'
  obs = observations(
    read_rows(path),
    _N_COL.value or 'N',
    _D_COL.value or 'D',
    _C_COL.value or 'C',
    loss_col,
    source=path,
    named=named,
  )
  if command == 'fit':
    result = uncertainty.fit_with_intervals(
      obs, law, loss_col, _BOOTSTRAP.value or 0, _SEED.value, _IRREDUCIBLE.value
    )
    print(json.dumps(formatting.fit_json(result)) if _JSON.value else formatting.format_fit(result))
    return
  predictions = uncertainty.holdout(obs, law, _HOLD_OUT.value, _IRREDUCIBLE.value)
  if _JSON.value:
    print(json.dumps(formatting.holdout_json(law, _HOLD_OUT.value, predictions)))
  else:
    print(formatting.format_holdout(law, _HOLD_OUT.value, predictions, len(obs)))


if __name__ == '__main__':
  cli.run(main)
