"""The report of a sweep (python -m gptjax.scaling report ROOT): PNG plots, report.md and card.md.

Reads ROOT/results.jsonl and every run's ROOT/<name>/metrics.jsonl and fits each law the runs
support, so one report serves every sweep in experiments/:

  law         runs it is fitted to                                       loss it uses
  kaplan_n    the largest set of 3+ sizes trained on the same tokens     best_eval_loss
  kaplan_d    the largest set of 3+ data sizes (D = unique_tokens) for   best_eval_loss
              one model and length
  kaplan_c    the lower envelope of all evaluation curves in (C, loss)   eval_loss along training
  isoflop     single-pass runs (D <= unique_tokens) outside the kaplan_n  eval_loss (final)
              set, 2+ compute budgets with 3+ sizes each
  chinchilla  single-pass runs with 3+ distinct N and 3+ distinct D        eval_loss (final)

Kaplan et al. fit early-stopped losses, hence the best evaluation; Hoffmann et al. the loss at the
end of a schedule matched to the run's length, hence the final one.
"""

import math
import os

import numpy as np
from matplotlib import cm, colors, ticker
from matplotlib.figure import Figure  # drawn by the Agg renderer; no pyplot, no display

from gptjax.data import sources
from gptjax.errors import UserError
from gptjax.models import accounting
from gptjax.scaling import card, formatting, laws, selection, tuning, uncertainty
from gptjax.scaling.observations import Observations, read_rows
from gptjax.training.metrics import read_metrics

_FIGSIZE = (7, 4.8)  # inches, at 120 dpi


def supported_laws(rows: list[dict]) -> dict[str, list[int]]:
  """{law: indices of the rows it is fitted to} for each law the rows support, in the order it
  takes them: the rule of gptjax/scaling/selection.py, which fit and holdout follow too."""
  index = {id(row): i for i, row in enumerate(rows)}
  return {
    law: [index[id(row)] for row in chosen.rows]
    for law, chosen in selection.supported(rows).items()
  }


def eval_curves(root: str, rows: list[dict]) -> dict[str, np.ndarray]:
  """{run: (evaluations, 3) array of (tokens, C, eval loss)} from each run's metrics.jsonl, C and
  tokens scaled from the run's totals by the step."""
  curves = {}
  for row in rows:
    logged = read_metrics(os.path.join(root, row['name']), row['steps'])
    fraction = lambda r: r['step'] / row['steps']
    points = [
      (row['D'] * fraction(r), row['C'] * fraction(r), r['eval_loss'])
      for r in logged
      if 'eval_loss' in r
    ]
    if points:
      curves[row['name']] = np.array(points)
  return curves


# What a sweep row's parameter columns count; write_report fits the one it is given as N.
N_COLUMNS = {
  'N': 'non-embedding parameters',
  'N_compute': 'parameters C counts, C / 6D',
  'N_total': 'all parameters',
}


def write_report(
  root: str,
  out: str,
  bootstrap_k: int = 100,
  seed: int = 0,
  tuned_field: str = '',
  n_col: str = 'N',
) -> str:
  """Fits, plots, report.md and the scaling card card.md (gptjax/scaling/card.py, with
  ROOT/hypothesis.md if the sweep has one) of the sweep in `root`, written to `out`; returns
  report.md.
  With tuned_field (a config field the sweep tried several values of, such as train.lr), the
  laws are fitted to the tuned frontier, the best run of every (N, D)
  (gptjax/scaling/tuning.py). Runs retired by a non-finite step (no eval_loss) are left out.
  n_col: the column the laws take as N (N_COLUMNS). A ladder check (gptjax/scaling/ladder.py)
  saved as OUT/ladder_check.json goes on the card."""
  if n_col not in N_COLUMNS:
    raise UserError(f'--n_col={n_col!r}: report takes one of {", ".join(N_COLUMNS)}')
  all_rows = read_rows(root)
  if n_col != 'N':
    if any(n_col not in row for row in all_rows):
      raise UserError(f'{root}/results.jsonl: a row has no {n_col} (written by newer sweeps)')
    all_rows = [{**row, 'N': row[n_col], 'N_nonembedding': row['N']} for row in all_rows]
  n_label = f'N ({N_COLUMNS[n_col]})'
  every_row = [row for row in all_rows if row.get('eval_loss') is not None]
  if not every_row:
    raise UserError(f'{root}/results.jsonl has no run with an eval_loss')
  noise = tuning.seed_noise(every_row)
  for column in (
    'name',
    'N',
    'N_total',
    'D',
    'unique_tokens',
    'C',
    'C_convention',
    'steps',
    'eval_loss',
    'best_eval_loss',
  ):
    if any(column not in row for row in every_row):
      raise UserError(
        f"{root}/results.jsonl is not a sweep's results (a row has no {column}); "
        'fit other files with python -m gptjax.scaling fit'
      )
  tuning_section = ''
  if tuned_field:
    rows, found = tuning.tuned_frontier(every_row, tuned_field)
    # Kaplan's laws fit early-stopped losses, so their runs are the best by best_eval_loss
    early_rows, early_found = tuning.tuned_frontier(every_row, tuned_field, 'best_eval_loss')
    tuning_section = _tuning_markdown(tuned_field, found, 'eval_loss')
    if [o.best_run for _, o in early_found] != [o.best_run for _, o in found]:
      tuning_section += _tuning_markdown(tuned_field, early_found, 'best_eval_loss')
  else:
    rows = early_rows = every_row
  os.makedirs(out, exist_ok=True)
  conventions = {row['C_convention'] for row in rows}
  if len(conventions) > 1:
    raise UserError(f'{root}/results.jsonl mixes compute conventions: {sorted(conventions)}')
  convention = conventions.pop()
  # Each law's runs by the rule of selection.py, as fit and holdout choose them; given the runs
  # without an eval_loss too, it names them among those it leaves out.
  unfinished = [row for row in all_rows if row.get('eval_loss') is None]
  supported = selection.supported(rows + unfinished, f'{root}/results.jsonl')
  early = selection.supported(early_rows + unfinished, f'{root}/results.jsonl')
  for law in ('kaplan_n', 'kaplan_d'):
    supported.pop(law, None)
    if law in early:
      supported[law] = early[law]
  curves = eval_curves(root, rows)
  sections, fitted_laws, fits = [], [], []

  def observed(law: str) -> Observations:
    return supported[law].obs

  def fitted_section(law: str, obs: Observations, loss_col: str, title: str, figure: str):
    result = uncertainty.fit_with_intervals(
      obs, law, loss_col, bootstrap_k, seed, selection=supported.get(law)
    )
    sections.append(_fit_markdown(title, result, figure))
    fitted_laws.append(law)
    fits.append(result)
    return result.fitted

  if curves:
    _plot_training_curves(root, rows, out)
  if 'kaplan_n' in supported:
    obs = observed('kaplan_n')
    fitted = fitted_section('kaplan_n', obs, 'best_eval_loss', 'L(N): model size', 'loss_vs_n.png')
    _plot_power_law(
      obs.n,
      obs.loss,
      fitted,
      n_label,
      'N',
      os.path.join(out, 'loss_vs_n.png'),
    )
  if 'kaplan_d' in supported:
    obs = observed('kaplan_d')
    fitted = fitted_section('kaplan_d', obs, 'best_eval_loss', 'L(D): data size', 'loss_vs_d.png')
    _plot_power_law(
      obs.d, obs.loss, fitted, 'D (unique training tokens)', 'D', os.path.join(out, 'loss_vs_d.png')
    )
  if curves:
    points = np.concatenate(list(curves.values()))
    owner = [name for name, curve in curves.items() for _ in curve]
    frontier = laws.pareto_frontier(points[:, 1], points[:, 2])
    obs = Observations(
      tuple(f'{owner[i]}@{points[i, 0]:.0f} tokens' for i in frontier),
      points[frontier, 2],
      c=points[frontier, 1],
      c_convention=convention,
    )
    try:
      fitted = fitted_section(
        'kaplan_c',
        obs,
        'eval_loss along training',
        'L(C): the compute frontier of the training curves',
        'loss_vs_c.png',
      )
    except UserError as e:
      sections.append(f'### L(C): the compute frontier of the training curves\n\nNot fitted: {e}\n')
      fitted = None
    _plot_frontier(
      rows,
      curves,
      points[frontier],
      fitted,
      convention,
      os.path.join(out, 'loss_vs_c.png'),
      n_label,
    )
  isoflop = chinchilla = holdout = None
  ladder = _ladder_check(out)
  if 'isoflop' in supported:
    obs = observed('isoflop')
    title = 'IsoFLOP profiles: Chinchilla Approach 2'
    try:
      isoflop = fitted_section('isoflop', obs, 'eval_loss', title, 'isoflop.png')
    except UserError as e:  # e.g. fewer than 2 budgets with their minimum inside the sizes
      runs = '\n'.join(formatting.format_selection(supported['isoflop'], '- '))
      sections.append(f'### {title}\n\nNot fitted: {e}\n\n{runs}\n')
  if 'chinchilla' in supported:
    obs = observed('chinchilla')
    chinchilla = fitted_section(
      'chinchilla', obs, 'eval_loss', 'L(N, D): Chinchilla Approach 3', 'isoflop.png'
    )
    holdout = _holdout(obs)
    sections.append(_holdout_markdown(holdout))
  if isoflop is not None:
    _plot_isoflop(
      observed('isoflop'), isoflop, chinchilla, os.path.join(out, 'isoflop.png'), n_label
    )
    _plot_compute_optimal(
      isoflop, chinchilla, convention, os.path.join(out, 'compute_optimal.png'), ladder
    )
    sections.append(
      '### The compute-optimal frontier\n\n![compute-optimal N and D](compute_optimal.png)\n'
    )
  if ladder and ladder.get('runs'):
    _plot_ladder(ladder, os.path.join(out, 'ladder.png'))
    sections.append(
      '### Ladder check\n\nPredicted before training against trained, the best run of each '
      f'predicted (N, D); mean absolute relative error '
      f'{100 * ladder["mean_abs_relative_error"]:.2f}% (the card has each run).\n\n'
      '![predicted against trained](ladder.png)\n'
    )
  if not fitted_laws:
    sections.append('No law could be fitted: the runs vary neither N nor D in a way a law needs.\n')
  if noise:
    sections.append(
      f'Seed noise: the final eval loss of runs repeated under several seeds has a median '
      f'standard deviation of {noise["median"]:.4f} nats ({len(noise) - 1} runs); a prediction '
      'error below it says nothing.\n'
    )
  study, results = card.study_paths(root, out)  # printed: no machine path
  path = os.path.join(out, 'report.md')
  with open(path, 'w') as f:
    f.write(
      _markdown(
        study, results, rows, convention, fitted_laws, sections, bootstrap_k, bool(curves), n_col
      )
    )
    f.write(tuning_section)
  hypothesis = ''
  if os.path.isfile(os.path.join(root, 'hypothesis.md')):
    with open(os.path.join(root, 'hypothesis.md')) as f:
      hypothesis = f.read()
  with open(os.path.join(out, 'card.md'), 'w') as f:
    f.write(
      card.scaling_card(
        rows,
        fits,
        bootstrap_k,
        noise,
        study=study,
        results_path=results,
        hypothesis=hypothesis,
        all_rows=every_row,
        tuned_field=tuned_field,
        holdout=holdout,
        ladder=ladder,
      )
    )
  return path


def _ladder_check(out: str) -> dict | None:
  """The ladder check (ladder.check's dict) saved as OUT/ladder_check.json, if there is one."""
  path = os.path.join(out, 'ladder_check.json')
  if not os.path.exists(path):
    return None
  check, problem = sources.json_object(path)
  if problem:
    raise UserError(f'{path} is not a ladder check ({problem}); remake it or remove it')
  return check


def _tuning_markdown(field: str, found, loss_col: str) -> str:
  laws_of = {
    'eval_loss': 'the isoFLOP, Approach 3 and L(C) fits',
    'best_eval_loss': "Kaplan's L(N) and L(D) (early-stopped losses)",
  }[loss_col]
  lines = [
    '',
    f'## Tuning: the best {field} of every curve, by {loss_col}',
    '',
    f'{laws_of[0].upper()}{laws_of[1:]} use the tuned frontier: the best run by {loss_col} of each '
    f'(N, D, unique tokens) over the {field} values tried. An optimum at the edge of its grid is '
    'not bracketed: extend the grid.',
    '',
    f'| N | D | unique tokens | runs | best {field} | loss | best run | at grid edge |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ]
  for curve, o in found:
    unique = curve[0].get('unique_tokens')
    lines.append(
      f'| {curve[0]["N"]:,} | {curve[0]["D"]:,} | {f"{unique:,}" if unique else ""} | '
      f'{o.points} | {o.value:.4g} | {o.loss:.4f} | {o.best_run} | {"yes" if o.at_edge else ""} |'
    )
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Markdown


def _markdown(
  study: str,
  results: str,
  rows: list[dict],
  convention: str,
  fitted_laws: list[str],
  sections: list[str],
  bootstrap_k: int,
  have_curves: bool,
  n_col: str = 'N',
) -> str:
  lines = [
    f'# Scaling-law report: {study}',
    '',
    f'{len(rows)} runs from `{results}`; laws fitted: {", ".join(fitted_laws) or "none"}.',
    '',
    '## Conventions',
    '',
    '- **N**: non-embedding parameters (Kaplan et al.: no token or position embeddings); '
    '`N_total` in the table counts them too.'
    if n_col == 'N'
    else f'- **N**: the {N_COLUMNS[n_col]} (column `{n_col}`), not the non-embedding count.',
    '- **D**: tokens trained on, steps x batch x sequence length. `unique tokens` is how '
    'many distinct training tokens they were drawn from (`data.max_train_tokens`); a run '
    'with D > unique tokens repeated data and is left out of the isoFLOP and Approach 3 '
    'fits.',
    f'- **C**: `{convention}`: {accounting.COMPUTE_CONVENTIONS.get(convention, convention)}.',
    '- **Loss**: cross-entropy in nats per token on the validation split (the same windows '
    "for every run). Kaplan laws use each run's best evaluation (early stopping); isoFLOP "
    "and Approach 3 the final one, at the end of a schedule matched to the run's length.",
    f'- **Confidence intervals**: {uncertainty.CI_LEVEL:.0%} percentile intervals of '
    f'{bootstrap_k} refits to runs resampled with replacement (within each budget for '
    'isoFLOP; Approach 3 refits start from the full fit and a 32-point grid).'
    if bootstrap_k
    else '- **Confidence intervals**: none (--bootstrap 0).',
    '- **Approach 3**: L = E + A/N^alpha + B/D^beta, parameters in log space, the sum over '
    f'runs of the Huber loss (delta {laws.HUBER_DELTA}) of log L_hat - log L, L-BFGS from '
    f'{len(laws.grid_starts())} grid points, the best kept (Besiroglu et al. 2024).',
    '',
    '## Runs',
    '',
    '| run | N | N_total | D | unique tokens | C | steps | train loss | eval loss '
    '| best eval | tokens/s | wall s |',
    '| --- ' + '| ---: ' * 11 + '|',
  ]
  fmt = lambda v, spec: '' if v is None else format(v, spec)
  for row in sorted(rows, key=lambda r: (r['C'], r['N'])):
    lines.append(
      f'| {row["name"]} | {row["N"]:,.0f} | {row["N_total"]:,} | {row["D"]:,} | '
      f'{row["unique_tokens"]:,} | {row["C"]:.3g} | {row["steps"]} | '
      f'{fmt(row.get("train_loss"), ".4f")} | {row["eval_loss"]:.4f} | '
      f'{row["best_eval_loss"]:.4f} | {fmt(row.get("tokens_per_s"), ",.0f")} | '
      f'{fmt(row.get("wall_s"), ".0f")} |'
    )
  if have_curves:
    lines += ['', '![training curves](training_curves.png)']
  lines += ['', 'The checklist of the study: [card.md](card.md).', '', '## Fits', '']
  return '\n'.join(lines + sections) + '\n'


def _fit_markdown(title: str, result: uncertainty.FitResult, figure: str) -> str:
  law = result.law
  unit = 'points of the frontier' if law == 'kaplan_c' else 'runs'
  lines = [
    f'### {title}',
    '',
    '```',
    formatting.format_fit(result, unit),
    '```',
    '',
  ]
  if law != 'chinchilla':  # Approach 3 is drawn on the isoFLOP figure
    lines += [f'![{law}]({figure})', '']
  return '\n'.join(lines)


def _holdout(obs: Observations) -> list[dict] | str:
  """Approach 3's predictions of the largest budget from the others, or why there are none."""
  try:
    return uncertainty.holdout(obs, 'chinchilla', 'largest')
  except UserError as e:
    return str(e)


def _holdout_markdown(predictions: list[dict] | str) -> str:
  lines = ['#### Hold-out test', '']
  if isinstance(predictions, str):
    return '\n'.join(lines + [f'Not possible: {predictions}', ''])
  lines += [
    f'Approach 3 fitted to all runs but the largest compute budget ({len(predictions)} '
    'runs), predicting those:',
    '',
    '| run | C | loss | predicted | error |',
    '| --- | ---: | ---: | ---: | ---: |',
  ]
  for p in predictions:
    lines.append(
      f'| {p["name"]} | {p["C"]:.3g} | {p["loss"]:.4f} | {p["predicted"]:.4f} | '
      f'{p["relative_error"]:+.2%} |'
    )
  mean = np.mean([abs(p['relative_error']) for p in predictions])
  return '\n'.join(lines + ['', f'Mean absolute relative error: {mean:.2%}.', ''])


# ---------------------------------------------------------------------------------------------
# Plots


def _size_colours(n_values):
  """A colour per N on a log scale, and the mappable for a colour bar."""
  norm = colors.LogNorm(
    vmin=min(n_values), vmax=max(n_values) * (1.0001 if min(n_values) == max(n_values) else 1)
  )
  mappable = cm.ScalarMappable(norm=norm, cmap='viridis')
  return mappable.to_rgba, mappable


def _save(fig: Figure, path: str) -> str:
  for ax in fig.axes:
    if ax.get_label() != '<colorbar>':
      _plain_log_labels(ax)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def _plain_log_labels(ax) -> None:
  """Log axes labelled 2.5 rather than 2.5x10^0, and no minor labels on an axis that spans a decade
  (they crowd the major ones)."""
  for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
    if axis.get_scale() != 'log':
      continue
    if max(limits) / min(limits) > 10:
      axis.set_minor_formatter(ticker.NullFormatter())
    else:
      axis.set_major_formatter(ticker.StrMethodFormatter('{x:g}'))
      axis.set_minor_formatter(ticker.StrMethodFormatter('{x:g}'))


def _tex(value: float) -> str:
  """A number for mathtext: 3.86e+11 as 3.86 x 10^11."""
  exponent = math.floor(math.log10(abs(value))) if value else 0
  if -2 <= exponent <= 3:
    return f'{value:.3g}'
  return f'{value / 10**exponent:.3g}\\times10^{{{exponent}}}'


def _plot_training_curves(root: str, rows: list[dict], out: str) -> str:
  """One panel per model size N (or, past 12 sizes, per run of consecutive sizes), on shared log
  axes; in each, every run in its own colour (and line style past 10), named in the panel's legend
  with its D: thin lines the train loss, dots joined by a line the eval loss."""
  sizes = sorted({row['N'] for row in rows})
  count = lambda n: f'{n:,}' if n < 1e6 else f'{n:.3g}'
  per_panel = math.ceil(len(sizes) / 12)
  panels = [sizes[i : i + per_panel] for i in range(0, len(sizes), per_panel)]
  columns = min(len(panels), 3 if len(panels) <= 9 else 4)
  grid_rows = math.ceil(len(panels) / columns)
  fig = Figure(figsize=(4.3 * columns + 0.4, 3.3 * grid_rows + 0.7))
  axes = fig.subplots(grid_rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
  for ax, panel in zip(axes, panels):
    runs = sorted(
      (row for row in rows if row['N'] in panel),
      key=lambda r: (r['N'], r['D'], r['unique_tokens'], r['name']),
    )
    for i, row in enumerate(runs):
      colour, style = f'C{i % 10}', ('-', '--', ':', '-.')[i // 10 % 4]
      logged = read_metrics(os.path.join(root, row['name']), row['steps'])
      tokens_per_step = row['D'] / row['steps']
      train = [
        (r['step'] * tokens_per_step, r['train_loss'])
        for r in logged
        if math.isfinite(r.get('train_loss', math.nan))
      ]
      evals = [(r['step'] * tokens_per_step, r['eval_loss']) for r in logged if 'eval_loss' in r]
      epochs = row['D'] / row['unique_tokens']
      label = f'{row["name"]}: ' + (f'N = {count(row["N"])}, ' if len(panel) > 1 else '')
      label += f'D = {row["D"]:.3g}'
      if epochs > 1:
        label += f', {epochs:.3g} epochs'
      if train:
        ax.plot(*zip(*train), ls=style, color=colour, lw=0.8, alpha=0.5)
      if evals:
        ax.plot(*zip(*evals), 'o', ls=style, color=colour, lw=1.5, ms=3, label=label)
      elif train:
        ax.plot([], [], ls=style, color=colour, label=label)
    title = f'N = {count(panel[0])}' + (f' to {count(panel[-1])}' if len(panel) > 1 else '')
    ax.set(xscale='log', yscale='log', title=title)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, ncols=2 if len(runs) > 8 else 1, loc='upper right')
  for ax in axes[len(panels) :]:
    ax.remove()
  for i, ax in enumerate(axes[: len(panels)]):
    if i + columns >= len(panels):  # the lowest panel of its column
      ax.xaxis.set_tick_params(labelbottom=True)
      ax.set_xlabel('tokens trained on')
    if i % columns == 0:
      ax.set_ylabel('loss (nats/token)')
  fig.suptitle('Training curves by model size N (thin lines: train loss; dots: eval loss)')
  return _save(fig, os.path.join(out, 'training_curves.png'))


def _plot_power_law(x, loss, fitted: laws.PowerLaw, xlabel: str, symbol: str, path: str) -> str:
  fig = Figure(figsize=_FIGSIZE)
  ax = fig.subplots()
  ax.plot(x, loss, 'o', color='C0', label='runs')
  grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 100)
  label = (
    f'$L = {fitted.E:.3g} + ({_tex(fitted.x_c)}/{symbol})^{{{fitted.alpha:.3f}}}$'
    if fitted.irreducible
    else f'$L = ({_tex(fitted.x_c)}/{symbol})^{{{fitted.alpha:.3f}}}$'
  )
  ax.plot(grid, fitted.predict(grid), '-', color='C1', label=label)
  ax.set(
    xscale='log',
    yscale='log',
    xlabel=xlabel,
    ylabel='best eval loss (nats/token)',
    title=f'Loss vs {symbol}',
  )
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  return _save(fig, path)


def _plot_frontier(
  rows: list[dict],
  curves: dict[str, np.ndarray],
  frontier: np.ndarray,
  fitted: laws.PowerLaw | None,
  convention: str,
  path: str,
  n_label: str = 'N (non-embedding parameters)',
) -> str:
  colour, mappable = _size_colours([row['N'] for row in rows])
  fig = Figure(figsize=_FIGSIZE)
  ax = fig.subplots()
  for row in rows:
    if row['name'] in curves:
      curve = curves[row['name']]
      ax.plot(curve[:, 1], curve[:, 2], '-', color=colour(row['N']), lw=1, alpha=0.8)
  ax.plot(frontier[:, 1], frontier[:, 2], 'o', mfc='none', mec='black', ms=6, label='frontier')
  if fitted is not None:
    grid = np.geomspace(frontier[:, 1].min(), frontier[:, 1].max(), 100)
    ax.plot(
      grid,
      fitted.predict(grid),
      '--',
      color='black',
      label=f'$L = ({_tex(fitted.x_c)}/C)^{{{fitted.alpha:.3f}}}$',
    )
  ax.set(
    xscale='log',
    yscale='log',
    xlabel=f'C (training FLOPs, {convention})',
    ylabel='eval loss (nats/token)',
    title='Loss vs compute: evaluation curves and their envelope',
  )
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  fig.colorbar(mappable, ax=ax, label=n_label)
  return _save(fig, path)


def _plot_isoflop(
  obs: Observations,
  isoflop: laws.IsoflopFit,
  chinchilla: laws.ChinchillaLaw | None,
  path: str,
  n_label: str = 'N (non-embedding parameters)',
) -> str:
  fig = Figure(figsize=(8.4, 4.8))
  ax = fig.subplots()
  for i, budget in enumerate(isoflop.budgets):
    n = obs.n[budget.index]
    # The curves span the sizes trained and a factor 2 beyond: a minimum further out is an
    # extrapolation the report flags, and drawing it would squash the data into a corner.
    grid = np.geomspace(n.min() / 2, n.max() * 2, 100)
    label = f'runs at C = {budget.compute:.2g}'
    ax.plot(n, obs.loss[budget.index], 'o', color=f'C{i}', label=label)
    ax.plot(grid, np.polyval(budget.parabola, np.log(grid)), '-', color=f'C{i}', lw=1)
    if budget.inside:
      ax.plot(budget.n_opt, budget.loss_opt, '*', color=f'C{i}', ms=14, mec='black')
    if chinchilla is not None:
      approach_3 = chinchilla.predict(grid, budget.compute / (6 * grid))
      ax.plot(grid, approach_3, ':', color=f'C{i}', lw=1.5)
      n_opt = chinchilla.compute_optimal(budget.compute)[0]
      if grid[0] <= n_opt <= grid[-1]:
        loss_opt = chinchilla.predict(n_opt, budget.compute / (6 * n_opt))
        ax.plot(n_opt, loss_opt, 'D', mfc='none', mec=f'C{i}', mew=1.5, ms=8)
  # The line styles and markers, once for every budget, in grey.
  ax.plot([], [], '-', color='0.4', lw=1, label='Approach 2: parabola in log N')
  ax.plot([], [], '*', color='0.4', ms=12, mec='black', label='Approach 2: its minimum')
  if chinchilla is not None:
    ax.plot([], [], ':', color='0.4', lw=1.5, label='Approach 3: L(N, C / 6N)')
    ax.plot([], [], 'D', mfc='none', mec='0.4', mew=1.5, ms=8, label='Approach 3: its minimum')
  ax.set(
    xscale='log',
    xlabel=n_label,
    ylabel='final eval loss (nats/token)',
    title='IsoFLOP profiles: loss against N at fixed compute',
  )
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(loc='upper left', bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=9)
  return _save(fig, path)


def _plot_compute_optimal(
  isoflop: laws.IsoflopFit,
  chinchilla: laws.ChinchillaLaw | None,
  convention: str,
  path: str,
  ladder: dict | None = None,
) -> str:
  compute = np.array([b.compute for b in isoflop.budgets])
  grid = np.geomspace(compute.min() / 2, compute.max() * 4, 100)
  predicted = (ladder or {}).get('optimum', {})
  fig = Figure(figsize=(11, 4.5))
  axes = fig.subplots(1, 2)
  for ax, name, optimum, line, exponent, index in (
    (axes[0], 'N', [b.n_opt for b in isoflop.budgets], isoflop.n_opt, isoflop.a, 0),
    (axes[1], 'D', [b.d_opt for b in isoflop.budgets], isoflop.d_opt, isoflop.b, 1),
  ):
    ax.plot(compute, optimum, 'o', color='C0', label='isoFLOP minima')
    ax.plot(grid, line(grid), '-', color='C0', label=f'Approach 2: $\\propto C^{{{exponent:.2f}}}$')
    if chinchilla is not None:
      ax.plot(
        grid,
        chinchilla.compute_optimal(grid)[index],
        '--',
        color='C3',
        label=f'Approach 3: $\\propto C^{{{(chinchilla.a, chinchilla.b)[index]:.2f}}}$',
      )
    if f'{name}_opt' in predicted:
      ax.plot(
        predicted['C'],
        predicted[f'{name}_opt'],
        '*',
        mfc='none',
        mec='black',
        ms=14,
        label='ladder: predicted before training',
      )
    ax.set(
      xscale='log',
      yscale='log',
      xlabel=f'C (training FLOPs, {convention})',
      ylabel=f'{name}_opt',
      title=f'Compute-optimal {name}',
    )
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
  return _save(fig, path)


def _plot_ladder(ladder: dict, path: str) -> str:
  """Predicted against trained loss of the ladder's runs, with the 1% band the issue asks for."""
  runs = ladder['runs']
  predicted = np.array([r['predicted'] for r in runs])
  actual = np.array([r['actual'] for r in runs])
  fig = Figure(figsize=(5.5, 5))
  ax = fig.subplots()
  low, high = min(predicted.min(), actual.min()) * 0.98, max(predicted.max(), actual.max()) * 1.02
  line = np.array([low, high])
  ax.plot(line, line, '-', color='0.3', lw=1, label='predicted = trained')
  ax.fill_between(line, line * 0.99, line * 1.01, color='0.85', label='within 1%')
  ax.plot(actual, predicted, 'o', color='C0', label='the runs (best LR of each size)')
  for r in runs:
    ax.annotate(
      r['name'].split('_')[-1],
      (r['actual'], r['predicted']),
      fontsize=7,
      xytext=(3, 3),
      textcoords='offset points',
    )
  ax.set(
    xlabel='trained: final eval loss (nats/token)',
    ylabel='predicted (nats/token)',
    title='Ladder check',
    xlim=(low, high),
    ylim=(low, high),
  )
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)
