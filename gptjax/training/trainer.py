"""Training: a train-state pytree, a jitted data-parallel step, and the loop around it. The same
loop trains each architecture of gptjax/models/registry.py on its own rows and objective.

The loop: make or load the tokenizer and token caches, build or restore the state, then for each
step take the batch that is a pure function of (seed, step), update, and now and then log, evaluate
and checkpoint. Running the same command on the same workdir resumes from the latest checkpoint.
"""
import collections
import contextlib
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from gptjax import configuration
from gptjax.data import pairs, windows
from gptjax.decoding import sampling, seq2seq
from gptjax.errors import Preempted, UserError
from gptjax.models import accounting, registry
from gptjax.training import checkpoint, sharding
from gptjax.training import step as step_lib
from gptjax.training import workdir as workdir_lib
from gptjax.training.metrics import MetricsWriter
from gptjax.training.optimizer import learning_rate_schedule, make_optimizer
from gptjax.training.state import init_state


class Run:
  """Everything a training run holds: tokenizer, data, model, compiled steps and state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    configuration.validate(config, jax.device_count(), jax.process_count())
    self.is_chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    self._lock = workdir_lib.lock(workdir) if self.is_chief else None
    if self.is_chief:
      workdir_lib.check_config(config, workdir)
      self.tokenizer, self.data = _load_data(config, workdir, is_writer=True)
      workdir_lib.save_config(config, workdir)
    multihost_utils.sync_global_devices('token caches written')
    if not self.is_chief:
      self.tokenizer, self.data = _load_data(config, workdir, is_writer=False)
    self.model = registry.build(configuration.model_config(config, self.tokenizer.vocab_size),
                              pad_id=self.tokenizer.pad_id)
    objective = registry.make_objective(self.model, config.train, self.tokenizer)
    self.mesh = sharding.make_mesh()
    optimizer = make_optimizer(config.train)
    abstract_state = jax.eval_shape(lambda: init_state(self.model, optimizer, config.seed))
    self.state_shardings = sharding.state_shardings(
        abstract_state, self.mesh, fsdp=config.train.sharding == 'fsdp')
    compile_start = time.perf_counter()
    self.train_step = step_lib.compile_train_step(self.model, objective, optimizer, config, self.mesh,
                                         abstract_state, self.state_shardings,
                                         announce=self.is_chief)
    # Wall time by phase, for the overhead report at the end of train_and_evaluate.
    self.seconds = collections.Counter(compile=time.perf_counter() - compile_start)
    self.eval_step = jax.jit(step_lib.make_eval_step(objective, config.seed),
                             in_shardings=(self.state_shardings.params,
                                           sharding.batch_sharding(self.mesh)),
                             out_shardings=sharding.replicated(self.mesh))
    self.checkpoints = checkpoint.manager(workdir, config.train.keep_checkpoints)
    self.state = checkpoint.restore_latest(self.checkpoints, abstract_state, self.state_shardings)
    if self.state is None:
      self.state = jax.jit(lambda: init_state(self.model, optimizer, config.seed),
                           out_shardings=self.state_shardings)()

  def close(self) -> None:
    self.checkpoints.close()
    if self._lock is not None:
      self._lock.close()  # releases the flock

  def batch(self, step: int) -> jax.Array:
    train = self.config.train
    rows = self.data.train_batch(step, self.config.seed, train.global_batch_size,
                                 jax.process_index(), jax.process_count())
    return sharding.global_batch(rows, self.mesh, train.global_batch_size)

  def evaluate(self) -> dict[str, float]:
    """Validation metrics: eval_loss (nats per predicted token), eval_ppl, and bits per byte for
    a GPT or eval_accuracy for the others."""
    train = self.config.train
    batches = [self.eval_step(self.state.params, sharding.global_batch(rows, self.mesh, train.global_batch_size))
               for rows in self.data.eval_batches(train.eval_batches, train.global_batch_size,
                                                  jax.process_index(), jax.process_count())]
    means = {name: float(np.mean(values)) for name, values in
             jax.tree.map(lambda *v: list(v), *jax.device_get(batches)).items()}
    loss = means['loss']
    metrics = {'eval_loss': loss, 'eval_ppl': math.exp(min(loss, 50.0))}
    if self.model.config.architecture == 'gpt':
      metrics['eval_bpb'] = windows.bits_per_byte(loss, self.data.val_bytes_per_token)
    if 'accuracy' in means:
      metrics['eval_accuracy'] = means['accuracy']
    return metrics

  def sample(self) -> str | None:
    """A GPT's continuation of sample.prompt, or an encoder-decoder's greedy output for the first
    validation source; BERT has none."""
    cfg = self.config.sample
    architecture = self.model.config.architecture
    if architecture == 'bert':
      return None
    # Gather the (possibly sharded, possibly multi-host) parameters to every host: a collective,
    # so every process calls sample(); only process 0 prints.
    params = multihost_utils.process_allgather(self.state.params, tiled=True)
    if architecture == 'encoder_decoder':
      source_1xS, target_1xT1 = pairs.split_row(np.asarray(self.data.val[:1]), self.data.source_len)
      output_1xT = seq2seq.greedy(self.model, params, jnp.asarray(source_1xS),
                                           cfg.max_new_tokens, self.tokenizer.bos_id,
                                           self.tokenizer.eos_id, self.tokenizer.pad_id)
      return '\n'.join(f'{name}: {self.tokenizer.decode(ids[0])}' for name, ids in (
          ('source', source_1xS), ('reference', target_1xT1), ('model (greedy)', output_1xT)))
    prompt = self.tokenizer.encode(cfg.prompt)
    new_ids = sampling.generate(self.model, params, [self.tokenizer.bos_id, *prompt],
                                cfg.max_new_tokens, jax.random.PRNGKey(self.config.seed),
                                cfg.temperature, cfg.top_k, self.tokenizer.eos_id)
    return cfg.prompt + self.tokenizer.decode(new_ids)


def _load_data(config: ml_collections.ConfigDict, workdir: str, is_writer: bool):
  """The tokenizer and the training and validation rows of the run's architecture."""
  if config.model.architecture == 'encoder_decoder':
    return pairs.load_tokenizer_and_pairs(config, workdir, is_writer)
  return windows.load_tokenizer_and_data(config, workdir, config.train.seq_len, is_writer)


class _Preemption:
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, show_progress: bool = True,
                       stop_at: int | None = None) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir` to config.train.steps; returns the last metrics.

  stop_at ends this call early, after that step and a checkpoint, as a preempted job would; the
  learning-rate schedule still runs to config.train.steps, so a later call continues the same run.
  Raises Preempted after SIGTERM (once a checkpoint of the current step is saved).
  """
  start = time.perf_counter()
  run = Run(config, workdir)
  run.seconds['setup'] = time.perf_counter() - start - run.seconds['compile']
  writer = MetricsWriter(workdir, enabled=run.is_chief)
  preemption = _Preemption(config.train.preemption_grace_s)
  try:
    loop_start = time.perf_counter()
    metrics = _train_loop(run, writer, preemption, show_progress, stop_at)
    seconds = run.seconds
    seconds['train_steps'] = (time.perf_counter() - loop_start - seconds['data'] - seconds['eval']
                              - seconds['checkpoint'])
    metrics.update({f'seconds_{phase}': value for phase, value in seconds.items()})
    if run.is_chief:
      total = sum(seconds.values())
      print(f'wall time {total:.1f} s: ' + ', '.join(
          f'{phase.replace("_", " ")} {seconds[phase]:.1f}' for phase in
          ('setup', 'compile', 'train_steps', 'data', 'eval', 'checkpoint')) +
          f' (overhead {1 - seconds["train_steps"] / total:.1%})')
      if isinstance(run.data, windows.TokenData):
        print(f'eval loss {metrics["eval_loss"]:.4f} nats/token vs unigram entropy '
              f'{run.data.unigram_entropy:.4f} of the training tokens')
    if config.sample.max_new_tokens:
      sample = run.sample()
      if run.is_chief and sample is not None:
        print('--- sample ---\n' + sample + '\n--------------')
    return metrics
  finally:
    preemption.close()
    writer.close()
    run.close()


def _train_loop(run: Run, writer: MetricsWriter, preemption: _Preemption, show_progress: bool,
                stop_at: int | None) -> dict[str, float]:
  train = run.config.train
  flops_per_token = accounting.flops_per_token(run.model.config, train.seq_len)
  peak_flops = accounting.peak_flops_per_s(run.config.model.dtype)[0] * jax.device_count()
  schedule = learning_rate_schedule(train)
  tokens_per_step = train.global_batch_size * train.seq_len
  start_step = int(run.state.step)
  end_step = train.steps if stop_at is None else min(stop_at, train.steps)
  progress = tqdm.tqdm(total=train.steps, initial=start_step, dynamic_ncols=True, desc='train',
                       disable=not (show_progress and run.is_chief))
  metrics: dict[str, float] = {}
  losses, skipped = [], 0  # of the steps since the last log line
  window_start, window_first_step, paused_s = time.perf_counter(), start_step, 0.0
  # Steps' (step, metrics) not yet read back: reading a value waits for its step, so the loop
  # reads them only when it logs or saves, and the host keeps queueing steps in between.
  unchecked: list[tuple[int, dict]] = []

  def check_unchecked() -> None:
    nonlocal skipped
    pending = jax.device_get(unchecked)
    unchecked.clear()
    for step, step_metrics in pending:
      loss, grad_norm = float(step_metrics['train_loss']), float(step_metrics['grad_norm'])
      if math.isfinite(loss) and math.isfinite(grad_norm):
        losses.append(loss)
      elif train.nonfinite == 'skip':  # the step left the state unchanged
        skipped += 1
      else:
        quantity = f'loss is {loss}' if not math.isfinite(loss) else f'gradient norm is {grad_norm}'
        raise UserError(f'step {step}: the {quantity}; stopped without saving this state (the '
                        'last checkpoint is intact; train.nonfinite=skip skips such steps instead)')

  for step in range(start_step, end_step):
    with _timed(run.seconds, 'data'):
      batch = run.batch(step)
    run.state, step_metrics = run.train_step(run.state, batch)
    done = step + 1
    unchecked.append((done, step_metrics))
    if step == start_step:  # throughput excludes compilation
      jax.block_until_ready(run.state)
      window_start, window_first_step = time.perf_counter(), done
    preempted = preemption.agreed()
    if done % train.log_every == 0 or done == end_step or preempted:
      check_unchecked()
      metrics = {'train_loss': float(np.mean(losses)) if losses else float('nan'),
                 'grad_norm': float(step_metrics['grad_norm']), 'lr': float(schedule(step)),
                 'skipped_steps': skipped}
      if done > window_first_step:  # the first step of a run is compilation, not throughput
        elapsed = time.perf_counter() - window_start - paused_s
        metrics['tokens_per_s'] = tokens_per_step * (done - window_first_step) / elapsed
        metrics['mfu'] = flops_per_token * metrics['tokens_per_s'] / peak_flops
        progress.set_postfix(loss=f'{metrics["train_loss"]:.3f}',
                             tok_s=f'{metrics["tokens_per_s"]:,.0f}', mfu=f'{metrics["mfu"]:.1%}')
      writer.write(done, metrics)
      losses, skipped = [], 0
      window_start, window_first_step, paused_s = time.perf_counter(), done, 0.0
    pause_start = time.perf_counter()  # evaluation and checkpoints are not training throughput
    if done % train.eval_every == 0 or done == train.steps:
      with _timed(run.seconds, 'eval'):
        eval_metrics = run.evaluate()
      writer.write(done, eval_metrics)
      metrics.update(eval_metrics)
      if run.is_chief:
        progress.write(f'step {done}: ' + _describe_eval(eval_metrics))
    if done % train.checkpoint_every == 0 or done == end_step or preempted:
      check_unchecked()
      with _timed(run.seconds, 'checkpoint'):
        checkpoint.save(run.checkpoints, run.state)
    paused_s += time.perf_counter() - pause_start
    progress.update(1)
    if preempted:
      progress.close()
      raise Preempted(f'stopped by SIGTERM after step {done}; checkpoint {done} saved; run the same '
                      'command to continue')
  progress.close()
  if 'eval_loss' not in metrics:  # stopped early, or nothing was left to train
    with _timed(run.seconds, 'eval'):
      metrics.update(run.evaluate())
  return metrics


def _describe_eval(metrics: dict[str, float]) -> str:
  text = f'eval loss {metrics["eval_loss"]:.4f}, ppl {metrics["eval_ppl"]:.2f}'
  if 'eval_bpb' in metrics:
    text += f', {metrics["eval_bpb"]:.3f} bits/byte'
  if 'eval_accuracy' in metrics:
    text += f', accuracy {metrics["eval_accuracy"]:.3f}'
  return text


@contextlib.contextmanager
def _timed(seconds: collections.Counter, phase: str):
  start = time.perf_counter()
  yield
  seconds[phase] += time.perf_counter() - start
