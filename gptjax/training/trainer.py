"""Training: a train-state pytree, a jitted data-parallel step, and the loop around it. The same
loop trains each architecture of gptjax/models/registry.py on its own rows and objective.

The loop: make or load the tokenizer and token caches, build or restore the state, then for each
step take the batch that is a pure function of (seed, step), update, and now and then log, evaluate
and checkpoint. Running the same command on the same workdir resumes from the latest checkpoint.

train_loop is that loop with what differs between runs handed in as a Loop (the compiled step, the
batch of a step, evaluation, saving, the budget and cadence): pre-training here and fine-tuning
(gptjax/downstream/finetuning.py) both run it, so both read metrics back only at log steps, stop
or skip non-finite steps, and save and stop on SIGTERM, on one host or many.
"""

import collections
import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from gptjax import configuration
from gptjax.data import windows
from gptjax.errors import Preempted, UserError
from gptjax.models import accounting, registry
from gptjax.training import checkpoint, sharding
from gptjax.training import step as step_lib
from gptjax.training import workdir as workdir_lib
from gptjax.training.metrics import MetricsWriter
from gptjax.training.optimizer import learning_rate_schedule, make_optimizer
from gptjax.training.state import TrainState, init_state


class Run:
  """Everything a training run holds: tokenizer, data, model, compiled steps and state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, start_over: bool = False):
    self.config, self.workdir = config, workdir
    configuration.validate(config, jax.device_count(), jax.process_count())
    self.is_chief = jax.process_index() == 0
    workdir_lib.make(workdir)
    checkpoint.check_not_starting_over(workdir, start_over)
    self._lock = workdir_lib.lock(workdir) if self.is_chief else None
    self.checkpoints = None
    try:
      self._start(config, workdir)
    except BaseException:  # refused: release the workdir for the next command in this process
      self.close()
      raise

  def _start(self, config: ml_collections.ConfigDict, workdir: str) -> None:
    self.architecture = registry.get(config.model.architecture)
    if self.is_chief:
      workdir_lib.check_config(config, workdir)
      self.tokenizer, self.data = self.architecture.load_data(config, workdir, True)
      workdir_lib.save_config(config, workdir)
    multihost_utils.sync_global_devices('token caches written')
    if not self.is_chief:
      self.tokenizer, self.data = self.architecture.load_data(config, workdir, False)
    self.model = registry.build(
      configuration.model_config(config, self.tokenizer.vocab_size), pad_id=self.tokenizer.pad_id
    )
    objective = self.architecture.objective(self.model, config, self.tokenizer)
    self.mesh = sharding.make_mesh()
    optimizer = make_optimizer(config.train, registry.learning_rate_multipliers(self.model))
    abstract_state = jax.eval_shape(lambda: init_state(self.model, optimizer, config.seed))
    self.state_shardings = sharding.state_shardings(
      abstract_state, self.mesh, fsdp=config.train.sharding == 'fsdp'
    )
    compile_start = time.perf_counter()
    self.train_step = step_lib.compile_train_step(
      self.model,
      objective,
      optimizer,
      config,
      self.mesh,
      abstract_state,
      self.state_shardings,
      announce=self.is_chief,
    )
    # Wall time by phase, for the overhead report at the end of train_and_evaluate.
    self.seconds = collections.Counter(compile=time.perf_counter() - compile_start)
    self.eval_step = jax.jit(
      step_lib.make_eval_step(objective, config.seed),
      in_shardings=(self.state_shardings.params, sharding.batch_sharding(self.mesh)),
      out_shardings=sharding.replicated(self.mesh),
    )
    self.checkpoints = checkpoint.manager(workdir, config.train.keep_checkpoints)
    self.state = checkpoint.restore_latest(self.checkpoints, abstract_state, self.state_shardings)
    if self.state is None:
      self.state = jax.jit(
        lambda: init_state(self.model, optimizer, config.seed), out_shardings=self.state_shardings
      )()

  def close(self) -> None:
    if self.checkpoints is not None:
      checkpoint.close(self.checkpoints)
    if self._lock is not None:
      self._lock.close()  # releases the flock

  def batch(self, step: int) -> jax.Array:
    train = self.config.train
    rows = self.data.train_batch(
      step, self.config.seed, train.global_batch_size, jax.process_index(), jax.process_count()
    )
    return sharding.global_batch(rows, self.mesh, train.global_batch_size)

  def evaluate(self, params=None, final: bool = False) -> dict[str, float]:
    """Validation metrics (eval_summary's) of `params` (default: the state's), over
    train.eval_batches batches, or train.final_eval_batches for the evaluation after the last
    step."""
    train = self.config.train
    params = self.state.params if params is None else params
    batches = [
      self.eval_step(params, sharding.global_batch(rows, self.mesh, train.global_batch_size))
      for rows in self.data.eval_batches(
        evaluation_batches(train, final),
        train.global_batch_size,
        jax.process_index(),
        jax.process_count(),
      )
    ]
    return eval_summary(self.architecture, self.data, batch_means(jax.device_get(batches)))

  def sample(self) -> str | None:
    """The architecture's sample (a GPT's continuation of sample.prompt, an encoder-decoder's
    greedy output for the first validation source), or None where it has none (BERT)."""
    if self.architecture.sample is None:
      return None
    # Gather the (possibly sharded, possibly multi-host) parameters to every host: a collective,
    # so every process calls sample(); only process 0 prints.
    params = multihost_utils.process_allgather(self.state.params, tiled=True)
    return self.architecture.sample(self.model, params, self.tokenizer, self.data, self.config)


def evaluation_batches(train: ml_collections.ConfigDict, final: bool) -> int:
  """How many validation batches an evaluation reads (0: the whole split)."""
  return train.final_eval_batches if final and train.final_eval_batches >= 0 else train.eval_batches


def batch_means(batches: list[dict]) -> dict[str, float]:
  """Each metric's mean over evaluation batches, and loss_se: the standard error of the mean loss
  from the spread of the batch means. Each batch is one region of the split
  (windows.evaluation_items), so the spread covers how regions differ, not only tokens."""
  means = {name: float(np.mean([b[name] for b in batches])) for name in batches[0]}
  if len(batches) > 1:
    losses = [float(b['loss']) for b in batches]
    means['loss_se'] = float(np.std(losses, ddof=1) / math.sqrt(len(losses)))
  return means


def eval_summary(architecture, data, means: dict[str, float]) -> dict[str, float]:
  """The eval_* metrics of an objective's mean validation metrics: eval_loss (nats per predicted
  token) and its standard error eval_loss_se (from two batches up), eval_ppl, eval_accuracy where
  the objective has an accuracy, and the architecture's own (a GPT's bits per byte)."""
  loss = means['loss']
  metrics = {'eval_loss': loss, 'eval_ppl': math.exp(min(loss, 50.0))}
  if 'loss_se' in means:
    metrics['eval_loss_se'] = means['loss_se']
  metrics.update(architecture.eval_metrics(means, data))
  if 'accuracy' in means:
    metrics['eval_accuracy'] = means['accuracy']
  return metrics


class Preemption:
  """SIGTERM (what schedulers send before preempting) sets a flag the loop checks each step; if
  the loop has not saved and exited within grace_s, the process exits anyway."""

  def __init__(self, grace_s: float):
    self.grace_s, self.requested = grace_s, False
    self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    self.requested = True
    timer = threading.Timer(self.grace_s, lambda: os._exit(128 + signal.SIGTERM))
    timer.daemon = True
    timer.start()

  def agreed(self) -> bool:
    """Whether any process was asked to stop (every process must call this at the same step)."""
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())

  def close(self) -> None:
    signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  show_progress: bool = True,
  stop_at: int | None = None,
  start_over: bool = False,
) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir` to config.train.steps; returns the last metrics.

  stop_at ends this call early, after that step and a checkpoint, as a preempted job would; the
  learning-rate schedule still runs to config.train.steps, so a later call continues the same run.
  start_over trains from step 0 a workdir whose checkpoints were all set aside as damaged (see
  checkpoint.check_not_starting_over). Raises Preempted after SIGTERM (once a checkpoint of the
  current step is saved).
  """
  start = time.perf_counter()
  run = Run(config, workdir, start_over)
  run.seconds['setup'] = time.perf_counter() - start - run.seconds['compile']
  try:
    writer = MetricsWriter(workdir, enabled=run.is_chief, config=config)
  except BaseException:  # W&B refused the run, say: release the workdir
    run.close()
    raise
  preemption = Preemption(config.train.preemption_grace_s)
  try:
    loop_start = time.perf_counter()
    metrics = _train_loop(run, writer, preemption, show_progress, stop_at)
    seconds = run.seconds
    seconds['train_steps'] = (
      time.perf_counter() - loop_start - seconds['data'] - seconds['eval'] - seconds['checkpoint']
    )
    metrics.update({f'seconds_{phase}': value for phase, value in seconds.items()})
    if run.is_chief:
      total = sum(seconds.values())
      print(
        f'wall time {total:.1f} s: '
        + ', '.join(
          f'{phase.replace("_", " ")} {seconds[phase]:.1f}'
          for phase in ('setup', 'compile', 'train_steps', 'data', 'eval', 'checkpoint')
        )
        + f' (overhead {1 - seconds["train_steps"] / total:.1%})'
      )
      if isinstance(run.data, windows.TokenData):
        print(
          f'eval loss {metrics["eval_loss"]:.4f} nats/token vs unigram entropy '
          f'{run.data.unigram_entropy:.4f} of the training tokens'
        )
    if config.sample.max_new_tokens:
      sample = run.sample()
      if run.is_chief and sample is not None:
        print('--- sample ---\n' + sample + '\n--------------')
    return metrics
  finally:
    preemption.close()
    writer.close()
    run.close()


@dataclasses.dataclass
class Loop:
  """What differs between the runs train_loop trains: pre-training (train_and_evaluate) and
  fine-tuning (gptjax.downstream.finetuning) fill it in; train_loop does the rest."""

  train_step: Callable  # compiled (state, batch) -> (state, metrics of step.make_train_step)
  batch: Callable[[int], Any]  # step -> the global batch of that step
  # (state, whether this is the evaluation after the last step) -> metrics, on every process
  evaluate: Callable[[TrainState, bool], dict[str, float]]
  save: Callable[[TrainState, dict[str, float]], None]  # (state, this step's metrics): a collective
  steps: int  # the step budget: where the schedule ends
  log_every: int
  eval_every: int
  checkpoint_every: int  # save() runs then, at the last step and on preemption
  nonfinite: str  # 'stop' or 'skip' a step with a non-finite loss, gradient or update
  nonfinite_field: str  # where nonfinite is set, for the error message: train.nonfinite
  schedule: Callable[[int], float]  # the learning rate, logged as lr
  seconds: collections.Counter  # wall time by phase: data, eval, checkpoint (added to)
  describe: Callable[[int, dict[str, float]], str]  # (step, metrics) -> the line after evaluating
  tokens_per_step: int = 0  # > 0: log tokens_per_s
  flops_per_token: float = 0.0  # > 0 (with peak_flops): log mfu
  peak_flops: float = 0.0
  eval_in_train_row: bool = False  # True: a step's evaluation is written in its train row
  desc: str = 'train'  # of the progress bar


def train_loop(
  loop: Loop,
  state: TrainState,
  writer: MetricsWriter,
  preemption: Preemption,
  show_progress: bool,
  stop_at: int | None = None,
) -> tuple[TrainState, dict]:
  """Runs loop.train_step from state.step to loop.steps (or stop_at); returns the last state and
  metrics. Metrics are read back from the device only at log and checkpoint steps, so the host
  keeps queueing steps in between. Raises Preempted after SIGTERM, once save() has run."""
  is_chief = jax.process_index() == 0
  start_step = int(state.step)
  end_step = loop.steps if stop_at is None else min(stop_at, loop.steps)
  progress = tqdm.tqdm(
    total=loop.steps,
    initial=start_step,
    dynamic_ncols=True,
    desc=loop.desc,
    disable=not (show_progress and is_chief),
  )
  # The bar counts finished steps: JAX dispatches steps asynchronously, so a step is known done
  # only once something it computed is read back (its metrics at log steps, or an evaluation).
  finished = start_step

  def show_finished(step: int) -> None:
    nonlocal finished
    progress.update(step - finished)
    finished = step

  metrics: dict[str, float] = {}
  values, skipped = collections.defaultdict(list), 0  # of the steps since the last log line
  window_start, window_first_step, paused_s = time.perf_counter(), start_step, 0.0
  # Steps' (step, metrics) not yet read back: reading a value waits for its step.
  unchecked: list[tuple[int, dict]] = []

  def check_unchecked() -> None:
    nonlocal skipped
    pending = jax.device_get(unchecked)
    unchecked.clear()
    if pending:
      show_finished(pending[-1][0])
    for step, step_metrics in pending:
      if bool(step_metrics['finite']):
        for name, value in step_metrics.items():
          if name.startswith('train_'):
            values[name].append(float(value))
      elif loop.nonfinite == 'skip':  # the step left the state unchanged
        skipped += 1
      else:
        loss, grad_norm = float(step_metrics['train_loss']), float(step_metrics['grad_norm'])
        quantity = (
          f'loss is {loss}'
          if not math.isfinite(loss)
          else f'gradient norm is {grad_norm}'
          if not math.isfinite(grad_norm)
          else 'update is not finite'
        )
        raise UserError(
          f'step {step}: the {quantity}; stopped without saving this state (the '
          f'last checkpoint is intact; {loop.nonfinite_field}=skip skips such steps '
          'instead)'
        )

  for step in range(start_step, end_step):
    with timed(loop.seconds, 'data'):
      batch = loop.batch(step)
    state, step_metrics = loop.train_step(state, batch)
    done = step + 1
    unchecked.append((done, step_metrics))
    if step == start_step:  # throughput excludes compilation
      jax.block_until_ready(state)
      window_start, window_first_step = time.perf_counter(), done
      show_finished(done)
    preempted = preemption.agreed()
    row = {}
    if done % loop.log_every == 0 or done == end_step or preempted:
      check_unchecked()
      names = [name for name in step_metrics if name.startswith('train_')]
      metrics = {
        name: float(np.mean(values[name])) if values[name] else float('nan') for name in names
      }
      metrics.update(
        {
          'grad_norm': float(step_metrics['grad_norm']),
          'lr': float(loop.schedule(step)),
          'skipped_steps': skipped,
        }
      )
      if done > window_first_step and loop.tokens_per_step:  # the first step is compilation
        elapsed = time.perf_counter() - window_start - paused_s
        metrics['tokens_per_s'] = loop.tokens_per_step * (done - window_first_step) / elapsed
        postfix = {
          'loss': f'{metrics["train_loss"]:.3f}',
          'tok_s': f'{metrics["tokens_per_s"]:,.0f}',
        }
        if loop.flops_per_token and loop.peak_flops:
          metrics['mfu'] = loop.flops_per_token * metrics['tokens_per_s'] / loop.peak_flops
          postfix['mfu'] = f'{metrics["mfu"]:.1%}'
        progress.set_postfix(postfix)
      else:
        progress.set_postfix(loss=f'{metrics["train_loss"]:.3f}')
      row = dict(metrics)
      values, skipped = collections.defaultdict(list), 0
      window_start, window_first_step, paused_s = time.perf_counter(), done, 0.0
    evaluating = done % loop.eval_every == 0 or done == loop.steps
    if row and not (evaluating and loop.eval_in_train_row):
      writer.write(done, row)
    pause_start = time.perf_counter()  # evaluation and checkpoints are not training throughput
    if evaluating:
      with timed(loop.seconds, 'eval'):
        eval_metrics = loop.evaluate(state, done == loop.steps)
      show_finished(done)  # the evaluation read back values of the state after step `done`
      metrics.update(eval_metrics)
      if row and loop.eval_in_train_row:
        writer.write(done, {**row, **eval_metrics})
      else:
        writer.write(done, eval_metrics)
      if is_chief:
        progress.write(loop.describe(done, metrics))
    if done % loop.checkpoint_every == 0 or done == end_step or preempted:
      check_unchecked()
      with timed(loop.seconds, 'checkpoint'):
        loop.save(state, metrics)
    paused_s += time.perf_counter() - pause_start
    if preempted:
      progress.close()
      raise Preempted(
        f'stopped by SIGTERM after step {done}; checkpoint {done} saved; run the '
        'same command to continue'
      )
  progress.close()
  return state, metrics


def _train_loop(
  run: Run, writer: MetricsWriter, preemption: Preemption, show_progress: bool, stop_at: int | None
) -> dict[str, float]:
  """Pre-training through train_loop: run.state advances to train.steps (or stop_at)."""
  train = run.config.train
  loop = Loop(
    train_step=run.train_step,
    batch=run.batch,
    evaluate=lambda state, final: run.evaluate(state.params, final),
    save=lambda state, metrics: checkpoint.save(run.checkpoints, state),
    steps=train.steps,
    log_every=train.log_every,
    eval_every=train.eval_every,
    checkpoint_every=train.checkpoint_every,
    nonfinite=train.nonfinite,
    nonfinite_field='train.nonfinite',
    schedule=learning_rate_schedule(train),
    seconds=run.seconds,
    describe=lambda step, metrics: f'step {step}: ' + _describe_eval(metrics),
    tokens_per_step=train.global_batch_size * train.seq_len,
    flops_per_token=accounting.flops_per_token(run.model.config, train.seq_len),
    peak_flops=accounting.peak_flops_per_s(run.config.model.dtype)[0] * jax.device_count(),
  )
  state, run.state = run.state, None  # donated to the first step
  run.state, metrics = train_loop(loop, state, writer, preemption, show_progress, stop_at)
  if 'eval_loss' not in metrics:  # stopped early, or nothing was left to train
    with timed(run.seconds, 'eval'):
      metrics.update(run.evaluate(final=int(run.state.step) == train.steps))
  return metrics


def _describe_eval(metrics: dict[str, float]) -> str:
  text = f'eval loss {metrics["eval_loss"]:.4f}, ppl {metrics["eval_ppl"]:.2f}'
  if 'eval_bpb' in metrics:
    text += f', {metrics["eval_bpb"]:.3f} bits/byte'
  if 'eval_accuracy' in metrics:
    text += f', accuracy {metrics["eval_accuracy"]:.3f}'
  return text


@contextlib.contextmanager
def timed(seconds: collections.Counter, phase: str):
  start = time.perf_counter()
  yield
  seconds[phase] += time.perf_counter() - start
