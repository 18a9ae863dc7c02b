"""A study's scaling card (card.md next to report.md): the details a scaling-law study has to state
for its fits to be read and reproduced, following the checklist of Li, Kudugunta and Zettlemoyer
(2025), "(Mis)Fitting: A Survey of Scaling Laws": the hypothesis and the form fitted; how N, D and
C are counted; the hyperparameter policy; the data and its epochs; the fitting method (loss,
optimiser, starting points); the uncertainty (bootstrap intervals, seed noise); the hold-out test
and the ladder check.

Everything on the card is read from the results rows the laws were fitted to and from the fits
themselves, so it cannot drift from what was run. scaling_card returns the markdown; report.py
writes it. The card prints no machine path: study_paths names the study and its results file
relative to the directory the card is written to.
"""

import inspect
import math
import os

import numpy as np

from gptjax.data import tokenizers
from gptjax.models import accounting
from gptjax.scaling import laws, tuning, uncertainty
from gptjax.scaling.lbfgs import batched_lbfgs

FORMS = {
  'kaplan_n': 'L(N) = (N_c / N)^alpha_N',
  'kaplan_d': 'L(D) = (D_c / D)^alpha_D',
  'kaplan_c': 'L(C) = (C_c / C)^alpha_C',
  'isoflop': 'N_opt(C) = k_N C^a, D_opt(C) = k_D C^b (Chinchilla Approach 2)',
  'chinchilla': 'L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla Approach 3)',
}
# Which evaluation of each run a law is fitted to (the loss column report.py passes).
CHECKPOINTS = {
  'best_eval_loss': "each run's best evaluation (early stopping, as Kaplan et al.)",
  'eval_loss': "each run's final evaluation, at the end of a schedule matched to its length",
  'eval_loss along training': 'every evaluation along training: the lower envelope (Pareto '
  'frontier) of the curves in (C, loss), intermediate checkpoints included',
}


def study_paths(root: str, out: str) -> tuple[str, str]:
  """(the study's name, its results.jsonl as the card and report.md should print it): relative to
  `out`, where they are written, when one of the study's directory and `out` holds the other;
  else under the study's directory name. Never an absolute path, nor one that climbs past the
  study into the machine's directories."""
  root, out = os.path.abspath(root), os.path.abspath(out)
  name = os.path.basename(root)
  if os.path.commonpath([root, out]) in (root, out):
    return name, os.path.relpath(os.path.join(root, 'results.jsonl'), out)
  return name, f'{name}/results.jsonl'


def scaling_card(
  rows: list[dict],
  fits: list[uncertainty.FitResult],
  bootstrap_k: int,
  seed_noise: dict[str, float],
  *,
  study: str = '',
  results_path: str = 'results.jsonl',
  hypothesis: str = '',
  all_rows: list[dict] | None = None,
  tuned_field: str = '',
  holdout: list[dict] | str | None = None,
  ladder: dict | None = None,
) -> str:
  """The card of a study, as markdown.

  rows: the results.jsonl rows the laws were fitted to (after tuning: the tuned frontier).
  fits: each law's fit with its bootstrap intervals (uncertainty.fit_with_intervals).
  bootstrap_k: the resamples asked for; seed_noise: tuning.seed_noise of every row.
  study, results_path: the study's name and its results file as the card prints them
    (study_paths); hypothesis: what the study set out to test, in its own words.
  all_rows: every run trained (default: rows), for the hyperparameter values tried;
    tuned_field: the config field the laws were tuned over (such as train.lr), if any.
  holdout: uncertainty.holdout's predictions of Approach 3 for the largest budget, or why
    there are none.
  ladder: the ladder check, a dict with any of: 'predicted_at' (str: when or at which commit
    the prediction was made), 'law' (str), 'fit_budgets' (list of C the law was fitted on),
    'runs' (list of {'name', 'predicted', 'actual', 'relative_error'}, optional 'C', 'N', 'D'),
    'mean_abs_relative_error' (float), 'optimum' (dict, e.g. {'C', 'N_opt', 'D_opt', 'loss'}).
  """
  all_rows = rows if all_rows is None else all_rows
  convention = rows[0]['C_convention'] if rows else ''
  sections = [
    f'# Scaling card: {study or "study"}',
    '',
    f'The checklist of Li, Kudugunta and Zettlemoyer (2025), "(Mis)Fitting: A Survey of Scaling '
    f'Laws", filled in from the {len(rows)} runs the laws were fitted to (`{results_path}`, '
    f'{len(all_rows)} runs trained) and from the fits of [report.md](report.md). Paths are '
    'relative to this file.',
    '',
    '## 1. Hypothesis',
    '',
    hypothesis.strip() or 'Not stated (a sweep states it in hypothesis.md, next to results.jsonl).',
    '',
    _forms(fits),
    _definitions(rows, convention),
    _hyperparameters(rows, all_rows, tuned_field),
    _data(rows),
    _fitting(fits),
    _uncertainty(fits, bootstrap_k, seed_noise, rows),
    _holdout(holdout, seed_noise),
    _ladder(ladder),
  ]
  return '\n'.join(sections).rstrip('\n') + '\n'


# ---------------------------------------------------------------------------------------------
# Sections


def _forms(fits: list[uncertainty.FitResult]) -> str:
  lines = ['## 2. The form fitted', '']
  if not fits:
    return '\n'.join(
      lines + ['No law was fitted: the runs vary neither N nor D as a law needs.', '']
    )
  lines += ['| law | form | points fitted | which evaluation |', '| --- | --- | ---: | --- |']
  for result in fits:
    form = FORMS[result.law]
    if result.law.startswith('kaplan') and result.fitted.irreducible:
      form = form.replace('= (', '= E + (')
    checkpoint = CHECKPOINTS.get(result.loss_col, result.loss_col)
    lines.append(f'| {result.law} | {form} | {len(result.obs)} | {checkpoint} |')
  return '\n'.join(lines + [''])


def _definitions(rows: list[dict], convention: str) -> str:
  n_compute = [row['N_compute'] for row in rows if row.get('N_compute') is not None]
  lines = [
    '## 3. Definitions of N, D and C',
    '',
    f'- **N**: non-embedding parameters (Kaplan et al.: no token or position embeddings), '
    f'{_span([r.get("N_nonembedding", r["N"]) for r in rows])} over '
    f'{_plural(len({r["N"] for r in rows}), "size")}; '
    f'with the embeddings (N_total) {_span([r["N_total"] for r in rows])}.',
    f'- **N_compute**, the parameters C counts (C = 6 N_compute D): {_span(n_compute)}.'
    + (' **The fits take N = N_compute.**' if 'N_nonembedding' in rows[0] else '')
    if len(n_compute) == len(rows) and rows
    else '- **N_compute**, the parameters C counts: not recorded in these rows (written by '
    'sweeps since it was added); under 6ND it is N.',
    f'- **D**: tokens trained on, steps x sequences per step x sequence length, '
    f'{_span([r["D"] for r in rows])} over {_plural(len({r["D"] for r in rows}), "value")}.',
    f'- **C**: convention `{convention}`: '
    f'{accounting.COMPUTE_CONVENTIONS.get(convention, "as the results give it")}; '
    f'{_span([r["C"] for r in rows], ".3g")} FLOPs.',
    '- **L**: cross-entropy in nats per token on the validation split, the same windows for '
    'every run.',
    '',
  ]
  return '\n'.join(lines)


def _hyperparameters(rows: list[dict], all_rows: list[dict], tuned_field: str) -> str:
  value = lambda row, field: tuning.config_value({'config': row.get('config') or {}}, field)
  values = lambda group, field: _values([value(r, field) for r in group])
  fitted_lr = 'lr of the tuned frontier' if tuned_field == 'train.lr' else 'lr of the runs fitted'
  lines = [
    '## 4. Hyperparameter policy',
    '',
    'Per model size, over every run trained (the runs fitted are a subset when the laws use a '
    'tuned frontier):',
    '',
    f'| N | runs | lr tried | {fitted_lr} | warmup steps | sequences x length = tokens per step '
    '| beta2 |',
    '| ---: | ---: | --- | --- | --- | --- | --- |',
  ]
  for n in sorted({r['N'] for r in all_rows}):
    group = [r for r in all_rows if r['N'] == n]
    used = [r for r in rows if r['N'] == n]
    batches = sorted(
      {(value(r, 'train.global_batch_size'), value(r, 'train.seq_len')) for r in group},
      key=str,
    )
    batch = ', '.join(
      f'{b} x {s} = {b * s:,}' if isinstance(b, int) and isinstance(s, int) else 'not recorded'
      for b, s in batches
    )
    lines.append(
      f'| {n:,.0f} | {len(group)} | {values(group, "train.lr")} | '
      f'{values(used, "train.lr") if used else "none fitted"} | '
      f'{values(group, "train.warmup_steps")} | {batch} | {values(group, "train.b2")} |'
    )
  warmup = [v for v in (value(r, 'train.warmup_steps') for r in all_rows) if v is not None]
  tokens_per_step = [
    value(r, 'train.global_batch_size') * value(r, 'train.seq_len')
    for r in all_rows
    if isinstance(value(r, 'train.global_batch_size'), int)
    and isinstance(value(r, 'train.seq_len'), int)
  ]
  schedule = values(all_rows, 'train.schedule')
  min_lr = values(all_rows, 'train.min_lr_ratio')
  decay = {
    'cosine': f'cosine decay to min_lr_ratio {min_lr} x lr at the last step',
    'linear': f'linear decay to min_lr_ratio {min_lr} x lr at the last step',
    'rsqrt': 'lr sqrt(warmup_steps / step)',
  }
  schedule = (
    f"not recorded in the runs' configs (train.schedule); min_lr_ratio {min_lr}"
    if schedule == 'not recorded'
    else '; '.join(
      f'{name}: linear warmup from 0 to lr, then {decay.get(name, name)}'
      for name in schedule.split(', ')
    )
  )
  parametrization = values(all_rows, 'model.parametrization')
  if parametrization == 'not recorded':  # the field came with the first alternative, mup
    parametrization = "standard (sp): the runs' configs predate model.parametrization"
  elif 'mup' in parametrization:
    parametrization += f' (base width {values(all_rows, "model.base_d_model")})'
  depth = values(all_rows, 'model.depth_scaling')
  depth = 'none' if depth == 'not recorded' else depth
  lines += [
    '',
    f'- **Tuning**: the laws are fitted to the best run of every (N, D) over the {tuned_field} '
    'values tried (report.md, "Tuning").'
    if tuned_field
    else '- **Tuning**: none; every run is fitted with the hyperparameters the sweep gave it.',
    f'- **Warmup**: {_span(warmup)} steps'
    + (
      f' ({_span([w * t for w, t in zip(warmup, tokens_per_step)])} tokens)'
      if len(warmup) == len(tokens_per_step) == len(all_rows)
      else ''
    )
    + '.',
    f'- **Batch**: {_span(tokens_per_step)} tokens per step; gradient accumulation '
    f'{values(all_rows, "train.grad_accum_steps")}.',
    f'- **Schedule**: {schedule}.',
    f'- **AdamW**: beta1 {values(all_rows, "train.b1")}, beta2 {values(all_rows, "train.b2")}, '
    f'eps {values(all_rows, "train.eps")}, weight decay {values(all_rows, "train.weight_decay")}, '
    f'gradient clipping {values(all_rows, "train.grad_clip")}.',
    f'- **Parametrization**: {parametrization}; depth scaling {depth}; init std '
    f'{values(all_rows, "model.init_std")}.',
    f'- **Seeds**: {values(all_rows, "seed")}.',
    '',
  ]
  return '\n'.join(lines)


def _data(rows: list[dict]) -> str:
  value = lambda row, field: tuning.config_value({'config': row.get('config') or {}}, field)
  epochs = {r['name']: r['D'] / r['unique_tokens'] for r in rows}
  most = max(epochs, key=epochs.get) if epochs else None
  repeated = sorted(name for name, e in epochs.items() if e > 1)
  source = _values([value(r, 'data.source') for r in rows])
  tfds = _values([value(r, 'data.tfds_name') for r in rows if value(r, 'data.source') == 'tfds'])
  lines = [
    '## 5. Data and epochs',
    '',
    f'- **Source**: {source}' + (f' ({tfds})' if tfds != 'not recorded' else '') + '; '
    f'validation fraction {_values([value(r, "data.val_fraction") for r in rows])}.',
    f'- **Tokenizer**: {_values([value(r, "tokenizer.kind") for r in rows])}, vocabulary '
    f'{_values([_vocabulary(r) for r in rows])}.',
    f'- **Unique training tokens**: {_span([r["unique_tokens"] for r in rows])}.',
    f'- **Epochs** (D / unique tokens): at most {epochs[most]:.3g} ({most}).'
    if most
    else '- **Epochs**: no runs.',
    f'- **Repeated data**: {len(repeated)} run(s) saw their data more than once '
    f'({", ".join(repeated)}); they are left out of the isoFLOP and Approach 3 fits.'
    if repeated
    else '- **Repeated data**: none; every run saw each token at most once.',
    '',
  ]
  return '\n'.join(lines)


def _fitting(fits: list[uncertainty.FitResult]) -> str:
  lines = ['## 6. Fitting method', '']
  if not fits:
    return '\n'.join(lines + ['No law was fitted.', ''])
  optimiser = {k: p.default for k, p in inspect.signature(batched_lbfgs).parameters.items()}
  grid = laws.CHINCHILLA_GRID
  grid_text = ', '.join(
    f'{k} in {{{", ".join(f"{v:g}" for v in grid[k])}}}' for k in ('a', 'b', 'e', 'alpha', 'beta')
  )
  for law in dict.fromkeys(r.law for r in fits):
    result = next(r for r in fits if r.law == law)
    if law.startswith('kaplan') and result.fitted.irreducible:
      text = (
        'least squares of log L (scipy.optimize.least_squares, E bounded to [0, min L)) from '
        '3 starts, E = 0, 0.5 and 0.9 x min L, each from the straight line through L - E; the '
        'best kept.'
      )
    elif law.startswith('kaplan'):
      text = (
        'least squares of log L on log x, a straight line in log-log (numpy.polyfit): closed '
        'form, no optimiser or starting point.'
      )
    elif law == 'isoflop':
      text = (
        f"runs grouped into compute budgets (within {laws.BUDGET_SPREAD}x of the budget's "
        'smallest C); per budget with 3+ sizes a least-squares parabola of L in log N and one in '
        'log D (numpy.polyfit), whose minima are N_opt and D_opt; then least-squares lines of '
        'log N_opt and log D_opt on log C. Closed form, no optimiser.'
      )
    else:
      text = (
        f'the sum over runs of the Huber loss (delta {laws.HUBER_DELTA:g}) of log L_hat - log L, '
        'with log L_hat = LSE(a - alpha log N, b - beta log D, e) and (A, B, E) = exp(a, b, e) '
        '(Besiroglu et al. 2024: a mean instead of the sum stops L-BFGS early). Optimiser: '
        f'L-BFGS (gptjax/scaling/lbfgs.py: memory {optimiser["memory"]}, backtracking Armijo '
        f'line search, stops at max |gradient| <= {optimiser["gtol"]:g} or a relative decrease '
        f'<= {optimiser["ftol"]:.2g}, at most {optimiser["max_iter"]} iterations) from every '
        f'point of a {len(laws.grid_starts()):,}-point grid, {grid_text} (Hoffmann et al. 2022, '
        "app. D.2), the best end point finished by scipy's L-BFGS-B. Objective at the fit: "
        f'{result.fitted.objective:.6g}.'
      )
    lines.append(f'- **{law}**: {text}')
  return '\n'.join(lines + [''])


def _uncertainty(
  fits: list[uncertainty.FitResult], bootstrap_k: int, noise: dict[str, float], rows: list[dict]
) -> str:
  lines = ['## 7. Uncertainty', '']
  if bootstrap_k:
    lines += [
      f'Bootstrap: {uncertainty.CI_LEVEL:.0%} percentile intervals of {bootstrap_k} refits to '
      'the points resampled with replacement (isoflop: within each budget; chinchilla: each '
      f'refit from the full fit and a {len(laws.grid_starts(uncertainty.BOOTSTRAP_GRID))}-point '
      'grid).',
      '',
      '| law | parameter | value | CI | refits |',
      '| --- | --- | ---: | --- | ---: |',
    ]
    for result in fits:
      for key, value in laws.summary(result.law, result.fitted).items():
        ci = result.intervals.get(key)
        interval = f'[{_number(ci[0])}, {_number(ci[1])}]' if ci else 'none'
        lines.append(
          f'| {result.law} | {key} | {_number(value)} | {interval} | '
          f'{result.resamples - result.failed} of {result.resamples} |'
        )
  else:
    lines.append('Bootstrap: none (--bootstrap 0).')
  lines.append('')
  repeated = {k: v for k, v in noise.items() if k != 'median'}
  if repeated:
    lines.append(
      f'- **Seed noise**: the final eval loss of {_plural(len(repeated), "run")} repeated under '
      f'several seeds has a median standard deviation of {noise["median"]:.4f} nats '
      f'({", ".join(f"{k} {v:.4f}" for k, v in sorted(repeated.items()))}).'
    )
  else:
    lines.append('- **Seed noise**: not measured: no run was repeated under another seed.')
  se = [r['eval_loss_se'] for r in rows if r.get('eval_loss_se') is not None]
  lines.append(
    f'- **Evaluation noise**: the standard error of the final eval loss over its batches is '
    f'{_span(se, ".2g")} nats (median {np.median(se):.2g}).'
    if se
    else '- **Evaluation noise**: not recorded in these rows (eval_loss_se).'
  )
  return '\n'.join(lines + [''])


def _holdout(holdout: list[dict] | str | None, noise: dict[str, float]) -> str:
  lines = ['## 8. Hold-out test', '']
  if holdout is None:
    return '\n'.join(lines + ['Not run: there is no Approach 3 fit to hold runs out of.', ''])
  if isinstance(holdout, str):
    return '\n'.join(lines + [f'Not possible: {holdout}', ''])
  mean = float(np.mean([abs(p['relative_error']) for p in holdout]))
  lines += [
    'Approach 3 fitted to every run but those of the largest compute budget, predicting them:',
    '',
    '| run | C | loss | predicted | error |',
    '| --- | ---: | ---: | ---: | ---: |',
  ]
  for p in holdout:
    lines.append(
      f'| {p["name"]} | {p["C"]:.3g} | {p["loss"]:.4f} | {p["predicted"]:.4f} | '
      f'{p["relative_error"]:+.2%} |'
    )
  lines += ['', f'Mean absolute relative error: {mean:.2%}.']
  if 'median' in noise:
    errors = np.mean([abs(p['predicted'] - p['loss']) for p in holdout])
    lines.append(
      f'Mean absolute error {errors:.4f} nats against a seed noise of {noise["median"]:.4f}.'
    )
  return '\n'.join(lines + [''])


def _ladder(ladder: dict | None) -> str:
  lines = ['## 9. Ladder check', '']
  if not ladder:
    return '\n'.join(
      lines + ['Not run: no prediction of larger runs was made and checked against them.', '']
    )
  if 'law' in ladder:
    lines.append(f'- **Law**: {ladder["law"]}.')
  if 'predicted_at' in ladder:
    lines.append(f'- **Predicted**: {ladder["predicted_at"]}, before the runs it predicts.')
  if ladder.get('fit_budgets'):
    lines.append(
      f'- **Fitted on** the budgets C = {", ".join(f"{c:.3g}" for c in ladder["fit_budgets"])}.'
    )
  if ladder.get('optimum'):
    lines.append(
      '- **Predicted optimum**: '
      + ', '.join(f'{k} {_number(v) if _is_number(v) else v}' for k, v in ladder['optimum'].items())
      + '.'
    )
  runs = ladder.get('runs') or []
  if runs:
    lines += ['', '| run | predicted | actual | error |', '| --- | ---: | ---: | ---: |']
    for r in runs:
      error = r.get('relative_error')
      lines.append(
        f'| {r.get("name", "")} | {_maybe(r.get("predicted"), ".4f")} | '
        f'{_maybe(r.get("actual"), ".4f")} | {_maybe(error, "+.2%")} |'
      )
  mean = ladder.get('mean_abs_relative_error')
  if mean is not None:
    lines += ['', f'Mean absolute relative error: {mean:.2%}.']
  return '\n'.join(lines + [''])


# ---------------------------------------------------------------------------------------------
# Numbers


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plural(count: int, noun: str) -> str:
  return f'{count} {noun}' + ('' if count == 1 else 's')


def _maybe(value, spec: str) -> str:
  return 'not run' if value is None else format(value, spec)


def _number(value: float) -> str:
  if not math.isfinite(value):
    return str(value)
  return f'{value:.4g}' if abs(value) < 1e4 else f'{value:.4e}'


def _span(values: list, spec: str = ',.0f') -> str:
  """'a' or 'a to b' of the values' range; 'not recorded' where there are none."""
  if not values:
    return 'not recorded'
  low, high = min(values), max(values)
  fmt = lambda v: format(v, spec)
  return fmt(low) if low == high else f'{fmt(low)} to {fmt(high)}'


def _values(values: list) -> str:
  """The distinct values, sorted, as text; 'not recorded' for the runs whose config lacks it."""
  present = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
  text = ', '.join(f'{v:g}' if _is_number(v) else str(v) for v in present)
  missing = sum(v is None for v in values)
  if not present:
    return 'not recorded'
  return text + (f' (not recorded for {missing} runs)' if missing else '')


def _vocabulary(row: dict):
  """The vocabulary a run's tokenizer had: the byte tokenizer's whatever tokenizer.vocab_size
  says."""
  if tuning.config_value(row, 'tokenizer.kind') == 'byte':
    return tokenizers.ByteTokenizer.vocab_size
  return tuning.config_value(row, 'tokenizer.vocab_size')
