"""The coordinate check, plotted: the RMS of representative activations after 1, 5 and 10 Adam
steps against width (standard parametrization beside muP, base width 32) and against depth (no
depth scaling beside CompleteP, base depth 2), as Yang et al. (2021, "Tensor Programs V", Figure 5)
show it. tests/test_parametrization.py asserts the same measurement (gptjax/models/
coordinate_check.py) on fewer models.

Hypothesis: under muP every activation's RMS stays within 2x from width 32 to 512, while under
'sp' the residual stream and the logits grow with width; under CompleteP every activation stays
within 2x from 2 blocks to 16, while without depth scaling the residual stream grows with depth.

  python experiments/coordinate_check.py     # -> experiments/results/coordinate_check/

Setup: GPT-2-style pre-LN models, 4 heads, context 32, vocabulary 256, no dropout. Width: 2
blocks, d_model 32 .. 512, d_ff 4x. Depth: width 64 (d_ff 256), 2 .. 16 blocks. Each model trains
10 steps of Adam (lr 3e-3, constant, no weight decay, no clipping) on one fixed batch of 16 x 33
random tokens, from 3 initialisations trained side by side; the RMS of each activation on that
batch is measured after steps 1, 5 and 10 of the one run and averaged over the seeds. The figure
plots the token+position embedding, the last block's attention and MLP outputs (before
CompleteP's branch multiplier and the residual add), the last block's output (the residual
stream) and the logits; the JSON holds every module's. Its 'spread' is, per plotted activation
and step count, the largest RMS over the widths (depths) divided by the smallest.

Wall time: 312 s (width panels 67 s and 71 s, depth panels 91 s and 83 s) on 2 CPU cores shared
with two training sweeps.

Result (spreads after step 10): muP keeps every plotted activation within 1.7x over the 16x
widths, where 'sp' grows the residual stream 55x, the attention output 135x and the logits 7x;
CompleteP keeps them within 1.6x over the 8x depths, where no depth scaling grows the residual
stream 9.8x. muP's logits still fall with width early in training (2.7x after step 1, 2.0x after
step 5): the 1/m readout shrinks their initial part, which the updates have not yet outgrown.
"""

import json
import os
import time

from gptjax.models.config import ModelConfig
from gptjax.models.coordinate_check import activation_rms, spread

WIDTHS = (32, 64, 128, 256, 512)
BASE_WIDTH = 32
DEPTHS = (2, 4, 8, 16)
DEPTH_WIDTH = 64
BASE_DEPTH = 2
STEPS = (1, 5, 10)
SEEDS = 3
LR = 3e-3
PANELS = {
  'width': {'sp': 'standard parametrization', 'mup': f'muP (base width {BASE_WIDTH})'},
  'depth': {'none': 'no depth scaling', 'completep': f'CompleteP (base depth {BASE_DEPTH})'},
}
OUT = os.path.join(os.path.dirname(__file__), 'results', 'coordinate_check')


def _config(**fields) -> ModelConfig:
  shape = dict(vocab_size=256, n_ctx=32, n_layers=2, n_heads=4, d_model=64, d_ff=256)
  return ModelConfig(**{**shape, **fields})


def config(axis: str, setting: str, size: int) -> ModelConfig:
  """The model at one point of a panel: `setting` the parametrization (width) or depth scaling
  (depth), `size` its width or number of blocks."""
  if axis == 'width':
    return _config(d_model=size, d_ff=4 * size, parametrization=setting, base_d_model=BASE_WIDTH)
  return _config(
    d_model=DEPTH_WIDTH,
    d_ff=4 * DEPTH_WIDTH,
    n_layers=size,
    depth_scaling=setting,
    base_n_layers=BASE_DEPTH,
  )


def representative(rms: dict[str, float], n_layers: int) -> dict[str, float]:
  """The plotted activations, by the modules' names (Dropout_0 is the embeddings' sum)."""
  last = f'h_{n_layers - 1}'
  return {
    'embedding': rms['Dropout_0'],
    'attention out (last block)': rms[f'{last}/attn'],
    'MLP out (last block)': rms[f'{last}/mlp'],
    'residual stream (last block)': rms[last],
    'logits': rms['logits'],
  }


def measure() -> dict:
  """{'rms': {axis: {setting: {size: {step: {module: rms}}}}}, 'spread': {axis: {setting:
  {step: {activation: max / min}}}}}, with the seconds each panel took."""
  result = {'rms': {}, 'spread': {}, 'seconds': {}}
  for axis, settings in PANELS.items():
    sizes = WIDTHS if axis == 'width' else DEPTHS
    for setting in settings:
      start = time.time()
      rows = {size: activation_rms(config(axis, setting, size), SEEDS, STEPS, LR) for size in sizes}
      result['seconds'][f'{axis}/{setting}'] = round(time.time() - start, 1)
      result['rms'].setdefault(axis, {})[setting] = rows
      result['spread'].setdefault(axis, {})[setting] = {
        step: spread(
          [representative(rows[size][step], config(axis, setting, size).n_layers) for size in sizes]
        )
        for step in STEPS
      }
      print(f'{axis} {setting}: {result["seconds"][f"{axis}/{setting}"]} s', flush=True)
  return result


def plot(result: dict, path: str) -> None:
  """2 x 2 panels (width: sp | mup; depth: none | completep), log-log; a colour per activation,
  darker and thicker lines for later steps."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 8.5))
  axes = fig.subplots(2, 2)
  shades = {step: 0.3 + 0.7 * i / max(1, len(STEPS) - 1) for i, step in enumerate(STEPS)}
  for row, (axis, settings) in zip(axes, PANELS.items()):
    sizes = WIDTHS if axis == 'width' else DEPTHS
    for ax, (setting, title) in zip(row, settings.items()):
      rows = result['rms'][axis][setting]
      for step in STEPS:
        series = [representative(rows[s][step], config(axis, setting, s).n_layers) for s in sizes]
        for colour, name in enumerate(series[0]):
          ax.plot(
            sizes,
            [r[name] for r in series],
            marker='o',
            markersize=3,
            color=f'C{colour}',
            alpha=shades[step],
            linewidth=0.8 + 0.6 * STEPS.index(step),
            label=name if step == STEPS[-1] else None,
          )
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xticks(sizes, [str(s) for s in sizes])
      ax.set_xlabel('d_model' if axis == 'width' else 'blocks (n_layers)')
      ax.set_ylabel('activation RMS')
      ax.set_title(title)
      ax.grid(alpha=0.3, which='both')
    lows, highs = zip(*(ax.get_ylim() for ax in row))  # one y range per row, to compare panels
    for ax in row:
      ax.set_ylim(min(lows), max(highs))
  axes[0][1].legend(fontsize=8, loc='upper left', title=f'after step {STEPS[-1]}')
  steps_text = ', '.join(str(s) for s in STEPS)
  fig.suptitle(
    f'Coordinate check: RMS after {steps_text} Adam steps (fainter = earlier), lr {LR:g}, '
    f'{SEEDS} seeds'
  )
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)


def report(result: dict) -> str:
  lines = []
  for axis, settings in PANELS.items():
    for setting in settings:
      ratios = result['spread'][axis][setting][STEPS[-1]]
      text = ', '.join(f'{name} {ratio:.2f}x' for name, ratio in ratios.items())
      lines.append(f'{axis} {setting}, step {STEPS[-1]}: {text}')
  return '\n'.join(lines)


if __name__ == '__main__':
  start = time.time()
  result = measure()
  result['seconds']['total'] = round(time.time() - start, 1)
  result['setup'] = {
    'widths': WIDTHS,
    'base_width': BASE_WIDTH,
    'depths': DEPTHS,
    'depth_width': DEPTH_WIDTH,
    'base_depth': BASE_DEPTH,
    'steps': STEPS,
    'seeds': SEEDS,
    'lr': LR,
  }
  os.makedirs(OUT, exist_ok=True)
  with open(os.path.join(OUT, 'coordinate_check.json'), 'w') as f:
    json.dump(result, f, indent=1)
  plot(result, os.path.join(OUT, 'coordinate_check.png'))
  print(report(result))
  print(f'total {result["seconds"]["total"]} s')
