"""Many runs of one model shape trained as one program: their train states stacked along a leading
run axis R and stepped together under jax.vmap, so one compilation and one launch of each XLA
operation serve them all. A tuning sweep (many learning rates at each size) then costs close to
its FLOPs rather than R times the per-step and per-run overhead of small models on XLA:CPU.

Per run (the fields of PER_RUN): its seed (initialisation and batch order), learning-rate schedule
(train.lr, warmup_steps, steps, schedule, min_lr_ratio), AdamW's b1, b2, eps and weight_decay, and
its cadence (log, eval and checkpoint steps, checkpoints kept), and where its metrics go
(logging.*: each run is a W&B run of its own). Everything else (model, data, batch, sequence
length, clipping, sharding) is the group's; group_key says which runs can stack.

Each run keeps its own workdir exactly as gptjax.main would leave it: config.json, metrics.jsonl,
and checkpoints of its own TrainState (the same optimizer-state structure), so a stacked run can
be resumed on its own by gptjax.main, and a stacked group resumes each run from its own latest
checkpoint, whatever step each had reached. A run that reaches its last step is evaluated,
saved and retired: the remaining runs are re-stacked (one more compilation per distinct group
size), so nothing computes for a run that has ended. A run whose step is not finite is retired
with train.nonfinite='stop' (its last checkpoint intact, `diverged` in its result) rather than
stopping the group: in a learning-rate sweep the largest rates are expected to diverge.

Numerics: a run's updates are its separate run's, computed in a batched program; the results
agree with separate runs to float32 rounding (tests/test_stacked.py says how closely).
Single-process, data-parallel over the local devices (the batch axis sharded, the stacked state
replicated); train.sharding='fsdp' runs do not stack (gptjax.sweep trains them one by one).
"""

import collections
import json
import math
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gptjax import configuration
from gptjax.errors import Preempted, UserError
from gptjax.models import registry
from gptjax.training import checkpoint, sharding, trainer
from gptjax.training import step as step_lib
from gptjax.training import workdir as workdir_lib
from gptjax.training.metrics import MetricsWriter
from gptjax.training.optimizer import learning_rate_schedule, make_optimizer
from gptjax.training.state import init_state

# AdamW's hyperparameters that enter the step as per-run values.
_TRACED = ('b1', 'b2', 'eps', 'weight_decay')
PER_RUN = frozenset(
  {'seed', 'sample.prompt', 'sample.max_new_tokens', 'sample.temperature', 'sample.top_k'}
  | {
    f'train.{name}'
    for name in (
      *_TRACED,
      'lr',
      'warmup_steps',
      'steps',
      'schedule',
      'min_lr_ratio',
      'log_every',
      'eval_every',
      'checkpoint_every',
      'keep_checkpoints',
      'nonfinite',
      'preemption_grace_s',
    )
  }
  | {name for name in configuration.FIELDS if name.startswith('logging.')}  # each its own writer
)


def group_key(config: ml_collections.ConfigDict) -> str | None:
  """Runs with equal keys train as one stack; None for a run that cannot stack (FSDP, several
  processes)."""
  if config.train.sharding != 'replicate' or config.distributed.initialize:
    return None
  flat = workdir_lib.flatten(json.loads(config.to_json()))
  return json.dumps({k: v for k, v in sorted(flat.items()) if k not in PER_RUN})


class _Member:
  """One run of the group: its workdir (locked), data, checkpoints, metrics and counters."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    configuration.validate(config, jax.device_count())
    self.config, self.workdir, self.train = config, workdir, config.train
    workdir_lib.make(workdir)
    checkpoint.check_not_starting_over(workdir)
    self._lock = workdir_lib.lock(workdir)
    self.checkpoints = self.writer = None
    try:
      workdir_lib.check_config(config, workdir)
      self.architecture = registry.get(config.model.architecture)
      self.tokenizer, self.data = self.architecture.load_data(config, workdir, True)
      workdir_lib.save_config(config, workdir)
      self.checkpoints = checkpoint.manager(workdir, self.train.keep_checkpoints)
      self.writer = MetricsWriter(workdir, config=config)
    except BaseException:
      self.close()
      raise
    # The learning rate of every step, evaluated once (on the host, per step, it costs more than
    # a tiny model's step).
    self.learning_rates = np.asarray(
      learning_rate_schedule(self.train)(np.arange(self.train.steps + 1)), np.float32
    )
    self.hyper = {name: self.train[name] for name in _TRACED}
    self.values, self.skipped = collections.defaultdict(list), 0
    self.metrics: dict[str, float] = {}
    self.diverged = ''

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    if self.checkpoints is not None:
      checkpoint.close(self.checkpoints)
    self._lock.close()


def train_stacked(
  runs: list[tuple[ml_collections.ConfigDict, str]],
  show_progress: bool = True,
  stop_at: int | None = None,
) -> list[dict[str, float]]:
  """Trains (or resumes) every (config, workdir) of `runs` to its train.steps as one stack;
  returns each run's last metrics (with seconds_* of the group's wall time by phase, stacked: R,
  and diverged: the reason where a non-finite step retired it). stop_at ends the call after that
  step (and a checkpoint), as a preempted job would. Raises Preempted after SIGTERM, once every
  active run has saved."""
  keys = {group_key(config) for config, _ in runs}
  if len(keys) != 1 or None in keys:
    raise UserError(
      'stacked runs must share everything but the fields of stacked.PER_RUN, and use '
      "train.sharding='replicate' on one process"
    )
  start = time.perf_counter()
  members: list[_Member] = []
  try:
    for config, workdir in runs:
      members.append(_Member(config, workdir))
    return _train(members, start, show_progress, stop_at)
  finally:
    for member in members:
      member.close()


def _train(members: list[_Member], start: float, show_progress: bool, stop_at: int | None):
  first = members[0]
  config, train = first.config, first.train
  model = registry.build(
    configuration.model_config(config, first.tokenizer.vocab_size), pad_id=first.tokenizer.pad_id
  )
  objective = first.architecture.objective(model, config, first.tokenizer)
  multipliers = registry.learning_rate_multipliers(model)
  optimizer = make_optimizer(train, multipliers)  # the state's structure; steps use per-run values
  abstract = jax.eval_shape(lambda: init_state(model, optimizer, config.seed))
  mesh = sharding.make_mesh()
  replicated = sharding.replicated(mesh)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  init = jax.jit(lambda seed: init_state(model, optimizer, seed))  # one compile for all seeds
  states = []
  for member in members:
    state = checkpoint.restore_latest(member.checkpoints, abstract, shardings)
    states.append(init(member.config.seed) if state is None else state)
  steps_done = [int(state.step) for state in states]
  seconds = collections.Counter(setup=time.perf_counter() - start)

  deterministic = not (
    model.config.embd_dropout or model.config.attn_dropout or model.config.resid_dropout
  )

  def one_step(state, batch, lr, hyper):
    run_train = types.SimpleNamespace(**{**train.to_dict(), **hyper})
    run_optimizer = make_optimizer(run_train, multipliers, schedule=lambda count: lr)
    step = step_lib.make_train_step(objective, run_optimizer, train.grad_accum_steps, deterministic)
    return step(state, batch)

  batch_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS))
  stacked_step = jax.jit(
    jax.vmap(one_step),
    in_shardings=(replicated, batch_sharding, replicated, replicated),
    out_shardings=replicated,
    donate_argnums=0,
  )
  stacked_eval = jax.jit(
    jax.vmap(
      lambda params, batch, key: objective(params, batch, True, key)[1], in_axes=(0, None, 0)
    ),
    in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
    out_shardings=replicated,
  )
  unstack = jax.jit(
    lambda stack: [jax.tree.map(lambda x: x[p], stack) for p in range(len(stack.step))]
  )
  eval_rows = {}  # final -> the validation batches, the same for every run

  def evaluate(state, active: list[int], final: bool) -> list[dict[str, float]]:
    if final not in eval_rows:
      n_batches = trainer.evaluation_batches(train, final)
      eval_rows[final] = list(first.data.eval_batches(n_batches, train.global_batch_size, 0, 1))
    keys = jnp.stack([jax.random.PRNGKey(members[i].config.seed) for i in _lanes(active)])
    outputs = jax.device_get([stacked_eval(state.params, rows, keys) for rows in eval_rows[final]])
    results = []
    for position, i in enumerate(active):
      means = trainer.batch_means([{name: o[name][position] for name in o} for o in outputs])
      results.append(trainer.eval_summary(members[i].architecture, members[i].data, means))
    return results

  active = [i for i, member in enumerate(members) if steps_done[i] < member.train.steps]
  for i, member in enumerate(members):
    if i not in active:  # trained already (an earlier call, or gptjax.main)
      member.metrics = evaluate(_stack([states[i]] * 2), [i], final=True)[0]
  state = _stack([states[i] for i in _lanes(active)]) if active else None
  del states
  preemption = trainer.Preemption(max(m.train.preemption_grace_s for m in members))
  tokens_per_step = train.global_batch_size * train.seq_len
  pending = []  # the metrics of steps not yet read back: reading waits for the step
  loop_start, throughput_steps, paused, compiled_sizes = None, 0, 0.0, set()
  try:
    while active:
      if stop_at is not None and min(steps_done[i] for i in active) >= stop_at:
        break
      lanes = _lanes(active)
      with trainer.timed(seconds, 'data'):
        rows = np.stack(
          [
            members[i].data.train_batch(
              steps_done[i], members[i].config.seed, train.global_batch_size, 0, 1
            )
            for i in lanes
          ]
        )
        lrs = np.array([members[i].learning_rates[steps_done[i]] for i in lanes])
        hyper = {
          name: np.array([members[i].hyper[name] for i in lanes], np.float32) for name in _TRACED
        }
      compiling = len(lanes) not in compiled_sizes
      step_start = time.perf_counter()
      state, step_metrics = stacked_step(state, rows, lrs, hyper)
      if compiling:  # the first step of each stack size compiles: not throughput
        jax.block_until_ready(state)
        compiled_sizes.add(len(lanes))
        seconds['compile'] += time.perf_counter() - step_start
        if loop_start is None:
          loop_start = time.perf_counter()
        else:
          paused += time.perf_counter() - step_start
      else:
        throughput_steps += 1
      for i in active:
        steps_done[i] += 1
      pending.append(step_metrics)
      preempted = preemption.agreed()
      stopping = stop_at is not None and all(steps_done[i] >= stop_at for i in active)

      def due(i: int, every: int) -> bool:
        return steps_done[i] % every == 0 or steps_done[i] == members[i].train.steps

      logging_now = [i for i in active if due(i, members[i].train.log_every)]
      evaluating = [i for i in active if due(i, members[i].train.eval_every)]
      saving = [
        i for i in active if due(i, members[i].train.checkpoint_every) or preempted or stopping
      ]
      if not (logging_now or evaluating or saving):
        continue
      retire = _check_pending(members, active, steps_done, jax.device_get(pending))
      pending.clear()
      pause = time.perf_counter()  # the steps read back are done: the rest is not throughput
      elapsed = pause - loop_start - paused
      for position, i in enumerate(active):
        member = members[i]
        if position in retire or not (i in logging_now or preempted or stopping):
          continue
        row = {
          'train_loss': float(np.mean(member.values['train_loss']))
          if member.values['train_loss']
          else float('nan'),
          'grad_norm': float(step_metrics['grad_norm'][position]),
          'lr': float(member.learning_rates[steps_done[i] - 1]),
          'skipped_steps': member.skipped,
        }
        if throughput_steps and elapsed > 0:  # each run's own (the stack's is R times as many)
          row['tokens_per_s'] = tokens_per_step * throughput_steps / elapsed
        member.writer.write(steps_done[i], row)
        member.metrics.update(row)
        member.values, member.skipped = collections.defaultdict(list), 0
      for final in {steps_done[i] == members[i].train.steps for i in evaluating}:
        with trainer.timed(seconds, 'eval'):
          results = evaluate(state, active, final)  # one evaluation of the stack serves them all
        for position, i in enumerate(active):
          last = steps_done[i] == members[i].train.steps
          if i in evaluating and last == final and position not in retire:
            members[i].writer.write(steps_done[i], results[position])
            members[i].metrics.update(results[position])
            if show_progress:
              print(
                f'{members[i].workdir} step {steps_done[i]}: '
                f'eval loss {results[position]["eval_loss"]:.4f}',
                flush=True,
              )
      if saving:
        with trainer.timed(seconds, 'checkpoint'):
          runs = unstack(state)  # one program splits the stack into its runs' states
          for position, i in enumerate(active):
            if i in saving and position not in retire:
              checkpoint.save(members[i].checkpoints, runs[position])
              if steps_done[i] == members[i].train.steps:
                retire.add(position)
          del runs
      paused += time.perf_counter() - pause
      if preempted:
        raise Preempted(
          f'stopped by SIGTERM; the {len(active)} running runs saved checkpoints; run the same '
          'command to continue'
        )
      if retire:  # re-stack the rest: nothing computes for a run that has ended
        keep = [p for p in range(len(active)) if p not in retire]
        state = jax.tree.map(lambda x: x[np.array(_lanes(keep))], state) if keep else None
        active = [active[p] for p in keep]
  finally:
    preemption.close()
  seconds['train_steps'] = time.perf_counter() - start - sum(seconds.values())
  total = sum(seconds.values())
  print(
    f'{len(members)} stacked runs, wall time {total:.1f} s: '
    + ', '.join(f'{phase.replace("_", " ")} {value:.1f}' for phase, value in seconds.items())
    + f' (overhead {1 - seconds["train_steps"] / total:.1%})',
    flush=True,
  )
  results = []
  for i, member in enumerate(members):
    if 'eval_loss' not in member.metrics and not member.diverged:  # stopped early
      restored = _stack([_restore(member, abstract, shardings)] * 2)
      member.metrics.update(evaluate(restored, [i], steps_done[i] == member.train.steps)[0])
    results.append(
      {
        **member.metrics,
        **{f'seconds_{phase}': value for phase, value in seconds.items()},
        'stacked': len(members),
        **({'diverged': member.diverged} if member.diverged else {}),
      }
    )
  return results


def _check_pending(members, active, steps_done, pending) -> set[int]:
  """Reads the pending steps' metrics into each run's window; returns the positions (in the
  stack) of runs a non-finite step retires (train.nonfinite='stop')."""
  retire = set()
  for position, i in enumerate(active):
    member = members[i]
    for k, step_metrics in enumerate(pending):
      done = steps_done[i] - len(pending) + k + 1
      if bool(step_metrics['finite'][position]):
        member.values['train_loss'].append(float(step_metrics['train_loss'][position]))
      elif member.train.nonfinite == 'skip':
        member.skipped += 1
      else:
        loss = float(step_metrics['train_loss'][position])
        member.diverged = (
          f'step {done}: the loss is {loss}'
          if not math.isfinite(loss)
          else f'step {done}: the gradient or update is not finite'
        )
        print(f'{member.workdir}: {member.diverged}; retired, its last checkpoint intact')
        retire.add(position)
        break
  return retire


def _restore(member: _Member, abstract, shardings):
  return checkpoint.restore_latest(member.checkpoints, abstract, shardings)


def _lanes(active: list[int]) -> list[int]:
  """The runs of the stack's rows: the active runs, a lone run twice. XLA:CPU computes a vmapped
  step of one row by another program than of several, and a run's numbers would then depend on
  whether it is last; of two rows and more they are the same (to the bit) whatever the others."""
  return active * 2 if len(active) == 1 else active


def _stack(states: list):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
