"""Training: a train-state pytree, a jitted data-parallel step, and the loop around it. The same
loop trains each architecture of gptjax/models.py on its own rows and objective.

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

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils

from gptjax import (accounting, checkpoint, configuration, data, models, pairs, sampling,
                    seq2seq_decoding, sharding)
from gptjax import workdir as workdir_lib
from gptjax.errors import Preempted, UserError
from gptjax.layers import ModelConfig
from gptjax.metrics import MetricsWriter
from gptjax.optimizer import learning_rate_schedule, make_optimizer


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: dict
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2] base key; step s uses fold_in(rng, s) for dropout (and BERT masking)


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = models.init_params(model, init_rng)
  return TrainState(step=jnp.array(0, jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=dropout_rng)


def accumulate_gradients(grad_fn, params, batch_BxW: jax.Array, step_rng: jax.Array,
                         grad_accum_steps: int) -> tuple[tuple[jax.Array, jax.Array], dict]:
  """Mean (objective, loss) and gradients over grad_accum_steps micro-batches, computed one after
  another."""
  # Micro-batch a takes rows a, a + A, a + 2A, ...: every device keeps an equal share of each.
  micro_AxMxW = batch_BxW.reshape(-1, grad_accum_steps, batch_BxW.shape[1]).swapaxes(0, 1)

  def accumulate(carry, micro):
    index, micro_MxW = micro
    values, grads = grad_fn(params, micro_MxW, jax.random.fold_in(step_rng, index))
    return jax.tree.map(jnp.add, carry, (values, grads)), None

  zeros = ((jnp.zeros((), jnp.float32),) * 2, jax.tree.map(jnp.zeros_like, params))
  sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_AxMxW))
  return jax.tree.map(lambda total: total / grad_accum_steps, sums)


def make_train_step(objective: models.Objective, optimizer: optax.GradientTransformation,
                    grad_accum_steps: int, deterministic: bool):
  """(state, batch rows) -> (new state, metrics), gradients averaged over micro-batches."""

  def objective_and_loss(params, rows, rng):
    value, metrics = objective(params, rows, deterministic, rng)
    return value, metrics['loss']

  def train_step(state: TrainState, batch_BxW: jax.Array):
    step_rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(objective_and_loss, has_aux=True)
    if grad_accum_steps == 1:  # no loop: XLA optimises a while loop's body less
      (value, loss), grads = grad_fn(state.params, batch_BxW, jax.random.fold_in(step_rng, 0))
    else:
      (value, loss), grads = accumulate_gradients(grad_fn, state.params, batch_BxW, step_rng,
                                                  grad_accum_steps)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    # A step with a non-finite loss or gradient changes nothing but the step counter, so no
    # non-finite value ever enters the state; the loop then stops or counts the skip.
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    keep_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep_finite(optax.apply_updates(state.params, updates), state.params),
        opt_state=keep_finite(opt_state, state.opt_state))
    return new_state, {'train_loss': loss, 'grad_norm': grad_norm}

  return train_step


def memory_estimate(model_config: ModelConfig,
                    train: ml_collections.ConfigDict) -> dict[str, int]:
  """accounting.memory_estimate per device for the train config's micro-batches and sharding."""
  return accounting.memory_estimate(
      model_config, train.global_batch_size // jax.device_count() // train.grad_accum_steps,
      train.seq_len, fsdp_shards=jax.device_count() if train.sharding == 'fsdp' else 1)


def compile_train_step(model: nn.Module, objective: models.Objective,
                       optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh, abstract_state, state_shardings,
                       announce: bool = False):
  """The jitted, compiled train step for global batches of train.global_batch_size rows, the
  state donated (updated in place). Training and gptjax.bench both run this function."""
  train = config.train
  estimate = memory_estimate(model.config, train)
  if announce:
    print('memory per device (estimate): ' + ', '.join(
        f'{name} {size / 2**20:,.1f} MiB' for name, size in estimate.items()))
  batch = sharding.batch_sharding(mesh)
  batch_abstract = jax.ShapeDtypeStruct((train.global_batch_size, models.row_width(config)),
                                        jnp.int32, sharding=batch)
  state_abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract_state, state_shardings)
  deterministic = not (model.config.embd_dropout or model.config.attn_dropout
                       or model.config.resid_dropout)
  try:  # compile now, so running out of memory is reported with what drives memory
    return jax.jit(
        make_train_step(objective, optimizer, train.grad_accum_steps, deterministic),
        in_shardings=(state_shardings, batch),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0).lower(state_abstract, batch_abstract).compile()
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
      raise
    raise UserError(
        f'out of memory compiling the train step (batch {train.global_batch_size} / '
        f'{train.grad_accum_steps} micro-batches, seq_len {train.seq_len}, d_model '
        f'{model.config.d_model}, n_layers {model.config.n_layers}; estimated '
        f'{sum(estimate.values()) / 2**30:.2f} GiB per device): lower the batch or raise '
        f'train.grad_accum_steps') from None


def make_eval_step(objective: models.Objective, seed: int):
  """(params, rows) -> metrics; what is random in an objective (BERT's masking) is the same at
  every evaluation."""
  return lambda params, rows: objective(params, rows, True, jax.random.PRNGKey(seed))[1]


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
    self.model = models.build(configuration.model_config(config, self.tokenizer.vocab_size),
                              pad_id=self.tokenizer.pad_id)
    objective = models.make_objective(self.model, config.train, self.tokenizer)
    self.mesh = sharding.make_mesh()
    optimizer = make_optimizer(config.train)
    abstract_state = jax.eval_shape(lambda: init_state(self.model, optimizer, config.seed))
    self.state_shardings = sharding.state_shardings(
        abstract_state, self.mesh, fsdp=config.train.sharding == 'fsdp')
    compile_start = time.perf_counter()
    self.train_step = compile_train_step(self.model, objective, optimizer, config, self.mesh,
                                         abstract_state, self.state_shardings,
                                         announce=self.is_chief)
    # Wall time by phase, for the overhead report at the end of train_and_evaluate.
    self.seconds = collections.Counter(compile=time.perf_counter() - compile_start)
    self.eval_step = jax.jit(make_eval_step(objective, config.seed),
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
      metrics['eval_bpb'] = data.bits_per_byte(loss, self.data.val_bytes_per_token)
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
      output_1xT = seq2seq_decoding.greedy(self.model, params, jnp.asarray(source_1xS),
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
  return data.load_tokenizer_and_data(config, workdir, config.train.seq_len, is_writer)


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
      if isinstance(run.data, data.TokenData):
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
