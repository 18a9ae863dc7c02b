"""Scaling-law fits, a sweep's report and a hold-out test, from the command line.

  python -m gptjax.scaling fit runs/X/results.jsonl --law chinchilla --bootstrap 200 [--json]
  python -m gptjax.scaling fit my_runs.csv --law kaplan_n --n_col params --loss_col loss
  python -m gptjax.scaling report runs/X [--out DIR] [--bootstrap 100]   # plots and report.md
  python -m gptjax.scaling holdout runs/X --hold_out largest [--law chinchilla]
  python -m gptjax.scaling tune runs/X [--tune_field train.lr] [--against N] [--json]

fit fits one law (gptjax/scaling/laws.py: kaplan_n, kaplan_d, kaplan_c, isoflop, chinchilla) to a
sweep's results.jsonl (or its directory) or any JSONL or CSV file, with --bootstrap K confidence
intervals; report writes the plots and report.md of a sweep (gptjax/scaling/report.py); holdout
fits a law to all runs but those with the most compute and predicts those; tune reads a sweep
that tried several values of a hyperparameter per (N, D), prints each one's optimum and fits the
optimum against N or C (gptjax/scaling/tuning.py). --tuned makes fit, report and holdout use the
tuned frontier, the best run of every (N, D). A flag that does not apply to the command given
(--law to report, say) is refused.

fit, holdout and report choose a law's runs by one rule (gptjax/scaling/selection.py: no diverged
or unfinished runs; no runs that repeated their data for isoflop and chinchilla; the model-size
and data-size series for kaplan_n and kaplan_d) and print the runs they left out and why; the
bootstrap is seeded (--seed), so the same command gives the same digits; a fit whose intervals do
not pin it down prints 'not identified' and why instead of its numbers.
"""

import dataclasses
import json

from absl import flags

from gptjax import cli
from gptjax.errors import UserError
from gptjax.scaling import formatting, laws, selection, tuning, uncertainty
from gptjax.scaling.observations import read_rows

_LAW = flags.DEFINE_enum(
  'law',
  None,
  laws.LAWS,
  'fit: the law to fit (required); holdout: the '
  'law to test (default chinchilla; not isoflop, which predicts no loss).',
)
_N_COL = flags.DEFINE_string('n_col', None, 'Column of parameters N (default N: non-embedding).')
_D_COL = flags.DEFINE_string(
  'd_col',
  None,
  'Column of training tokens D (default D, C / (6N) if absent; unique_tokens for kaplan_d on '
  "a sweep's rows).",
)
_C_COL = flags.DEFINE_string(
  'c_col', None, 'Column of training FLOPs C (default C; 6ND if absent).'
)
_LOSS_COL = flags.DEFINE_string(
  'loss_col',
  None,
  "Column of the loss (default eval_loss; best_eval_loss for kaplan_n and kaplan_d on a sweep's "
  'rows, as report fits them).',
)
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

_TUNED = flags.DEFINE_bool(
  'tuned', False, 'Fit the best run of every (N, D) over the values of --tune_field it tried.'
)
_TUNE_FIELD = flags.DEFINE_string(
  'tune_field', 'train.lr', 'The hyperparameter the sweep tuned (a dotted config field).'
)
_WHERE = flags.DEFINE_multi_string(
  'where', [], 'tune: only the runs whose config has field=value (e.g. model.parametrization=sp).'
)
_AGAINST = flags.DEFINE_enum(
  'against', 'N', ['N', 'C'], 'tune: fit the optimum as a power law of N or of C.'
)

_COLUMNS = ('n_col', 'd_col', 'c_col', 'loss_col')
# The flags each command reads; given to another command, a flag is refused.
_COMMANDS = {
  'fit': ('input', {'law', *_COLUMNS, 'irreducible', 'json', 'bootstrap', 'seed', 'tuned'}),
  'report': ('root', {'out', 'bootstrap', 'seed', 'tuned', 'tune_field', 'n_col'}),
  'holdout': ('input', {'law', *_COLUMNS, 'irreducible', 'json', 'hold_out', 'tuned'}),
  'tune': ('root', {'tune_field', 'against', 'where', 'loss_col', 'json', 'seed'}),
}
_OWN_FLAGS = (
  'law',
  *_COLUMNS,
  'irreducible',
  'json',
  'bootstrap',
  'seed',
  'out',
  'hold_out',
  'tuned',
  'tune_field',
  'against',
  'where',
)


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
    tuned_field = _TUNE_FIELD.value if _TUNED.value else ''
    written = report.write_report(
      path, _OUT.value or path, bootstrap_k, _SEED.value, tuned_field, _N_COL.value or 'N'
    )
    print(f'wrote {written}')
    return
  if command == 'tune':
    _tune(path)
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
  rows = read_rows(path)
  if _TUNED.value:
    rows = tuning.tuned_frontier(rows, _TUNE_FIELD.value, _LOSS_COL.value or 'eval_loss')[0]
  chosen = selection.select(
    rows,
    law,
    _LOSS_COL.value,
    _N_COL.value or 'N',
    _D_COL.value,
    _C_COL.value or 'C',
    source=path,
    named=named,
  )
  obs = chosen.obs
  try:
    if command == 'fit':
      result = uncertainty.fit_with_intervals(
        obs,
        law,
        chosen.loss_col,
        _BOOTSTRAP.value or 0,
        _SEED.value,
        _IRREDUCIBLE.value,
        selection=chosen,
      )
    else:
      predictions = uncertainty.holdout(obs, law, _HOLD_OUT.value, _IRREDUCIBLE.value)
  except UserError as e:
    raise UserError(f'{chosen.summary()}: {e}') from None
  if command == 'fit':
    print(json.dumps(formatting.fit_json(result)) if _JSON.value else formatting.format_fit(result))
  elif _JSON.value:
    print(json.dumps(formatting.holdout_json(law, _HOLD_OUT.value, predictions, chosen)))
  else:
    print(formatting.format_holdout(law, _HOLD_OUT.value, predictions, len(obs), chosen))


def _tune(path: str) -> None:
  loss_col = _LOSS_COL.value or 'eval_loss'
  rows = read_rows(path)
  for condition in _WHERE.value:
    field, _, value = condition.partition('=')
    rows = [row for row in rows if str(tuning.config_value(row, field)) == value]
    if not rows:
      cli.fail(f'--where {condition}: no run has it')
  _, found = tuning.tuned_frontier(rows, _TUNE_FIELD.value, loss_col)
  against = [curve[0][_AGAINST.value] for curve, _ in found]
  law = tuning.fit_hyperparameter_law(
    against, [o.value for _, o in found], _AGAINST.value, seed=_SEED.value
  )
  noise = tuning.seed_noise(rows, loss_col)
  if _JSON.value:
    optima = [
      {'N': c[0]['N'], 'D': c[0]['D'], 'C': c[0].get('C'), **dataclasses.asdict(o)}
      for c, o in found
    ]
    fitted = {
      'coefficient': law.coefficient,
      'exponent': law.exponent,
      'exponent_95': law.exponent_interval,
      'against': law.x_name,
    }
    print(
      json.dumps({'field': _TUNE_FIELD.value, 'optima': optima, 'law': fitted, 'seed_noise': noise})
    )
    return
  print(f'{"N":>12} {"D":>12} {_TUNE_FIELD.value:>12} {loss_col:>10}  runs  best run')
  for curve, o in found:
    n, d = curve[0]['N'], curve[0]['D']
    edge = '  AT THE GRID EDGE: extend the grid' if o.at_edge else ''
    print(f'{n:>12,} {d:>12,} {o.value:>12.4g} {o.loss:>10.4f}  {o.points:>4}  {o.best_run}{edge}')
  low, high = law.exponent_interval
  print(
    f'{_TUNE_FIELD.value}_opt = {law.coefficient:.4g} * {law.x_name}^{law.exponent:.4f} '
    f'(95% interval of the exponent {low:.4f} .. {high:.4f}), over {len(found)} curves'
  )
  if noise:
    print(f'seed noise: median std of {loss_col} over seeds {noise["median"]:.4f}')


if __name__ == '__main__':
  cli.run(main)
