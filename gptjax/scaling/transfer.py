"""Hyperparameter-transfer studies: loss against the learning rate, one curve per model size, one
panel per parametrization, as the muP papers draw them (Yang et al. 2021, Figure 1), with each
curve's optimum (gptjax/scaling/tuning.py) and how far it moves across the sizes.
experiments/mup_lr_transfer.py (width) and completep_lr_transfer.py (depth) are its users.
"""

import json
import os

from gptjax.scaling import tuning


def summarize(
  rows: list[dict], panel_field: str, panels: tuple, size_field: str, sizes: tuple
) -> dict:
  """Per panel value (e.g. model.parametrization) and size (e.g. model.d_model): the learning
  rates, losses, diverged runs and optimum of its curve; per panel, the optimum's spread over the
  sizes (largest / smallest) and its power law in N."""
  latest = list({row['name']: row for row in rows}.values())
  summary = {}
  for panel in panels:
    curves = {}
    for size in sizes:
      runs = sorted(
        (
          row
          for row in latest
          if tuning.config_value(row, panel_field) == panel
          and tuning.config_value(row, size_field) == size
        ),
        key=lambda row: row['config']['train']['lr'],
      )
      if not runs:
        continue
      lrs = [row['config']['train']['lr'] for row in runs]
      losses = [row['eval_loss'] for row in runs]
      best = tuning.optimum(lrs, losses, [row['name'] for row in runs])
      curves[size] = {
        'N': runs[0]['N'],
        'lrs': lrs,
        'eval_losses': losses,
        'diverged': [row['name'] for row in runs if row['eval_loss'] is None],
        'best_lr': best.value,
        'best_loss': best.loss,
        'best_at_grid_edge': best.at_edge,
      }
    summary[panel] = curves
    best_lrs = [c['best_lr'] for c in curves.values()]
    if len(best_lrs) > 1:
      summary[f'{panel}_best_lr_spread'] = max(best_lrs) / min(best_lrs)
    if len({c['N'] for c in curves.values()}) > 1:
      law = tuning.fit_hyperparameter_law([c['N'] for c in curves.values()], best_lrs)
      summary[f'{panel}_lr_vs_n'] = {
        'coefficient': law.coefficient,
        'exponent': law.exponent,
        'exponent_95': law.exponent_interval,
      }
  return summary


def plot(summary: dict, panels: dict, size_label: str, ylabel: str, path: str) -> None:
  """One panel per key of `panels` (its title the value), a curve per size, a star at each
  optimum."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharey=True)
  for axis, (panel, title) in zip(axes, panels.items()):
    for size, curve in summary.get(panel, {}).items():
      losses = zip(curve['lrs'], curve['eval_losses'])
      finite = [(lr, loss) for lr, loss in losses if loss is not None]
      axis.plot(*zip(*finite), marker='o', label=size_label.format(size))
      axis.plot(curve['best_lr'], curve['best_loss'], marker='*', color='black', markersize=9)
    axis.set_xscale('log', base=2)
    axis.set_xlabel('peak learning rate')
    axis.set_title(title)
    axis.grid(alpha=0.3)
  axes[0].set_ylabel(ylabel)
  axes[-1].legend()
  figure.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)


def report(summary: dict, panels: tuple, size_label: str) -> str:
  """The summary as lines of text: each curve's optimum, each panel's spread and law."""
  lines = []
  for panel in panels:
    for size, curve in summary.get(panel, {}).items():
      edge = ' (at the grid edge)' if curve['best_at_grid_edge'] else ''
      lines.append(
        f'{panel} {size_label.format(size)}: best lr {curve["best_lr"]:.2e}{edge}, '
        f'loss {curve["best_loss"]:.4f}'
      )
    if f'{panel}_best_lr_spread' in summary:
      line = f'{panel}: best lr moves {summary[f"{panel}_best_lr_spread"]:.1f}x across the sizes'
      law = summary.get(f'{panel}_lr_vs_n')
      if law:
        low, high = law['exponent_95']
        line += (
          f'; lr_opt = {law["coefficient"]:.3g} N^{law["exponent"]:.3f} '
          f'(95% {low:.3f} .. {high:.3f})'
        )
      lines.append(line)
  return '\n'.join(lines)


def write(summary: dict, path: str) -> None:
  with open(path, 'w') as f:
    json.dump(summary, f, indent=1)
