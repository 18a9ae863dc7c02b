"""Fault drill, in two modes.

kill (the default): kill a training run with SIGKILL at N random moments, restart it, and count how
many restarted runs end bitwise identical to an uninterrupted reference run.

  python experiments/fault_drill.py --n 20 --root /tmp/fault_drill \
      --out experiments/results/fault_drill.json

bad_files: write garbage into each file of a small trained workdir in turn (see bad_files below)
and run gptjax.sample, gptjax.evaluate and gptjax.main on it, then put the file back and run main
again.

  python experiments/fault_drill.py --mode bad_files --root /tmp/fault_drill_files \
      --out experiments/results/fault_drill_bad_files.json

Each trial starts the tiny config in a fresh workdir, waits for its first checkpoint, kills it after
a further delay drawn uniformly from the reference run's time between its first checkpoint and its
end (so kills land in training steps, evaluations and checkpoint writes, not in start-up), restarts
the same command, and compares every array of the final checkpoint (parameters, optimizer state,
step, RNG) with the reference's.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = (
  '--config.tokenizer.kind=byte',
  '--config.data.max_documents=200',
  '--config.sample.max_new_tokens=0',
  '--config.train.steps=200',
  '--config.train.checkpoint_every=10',
  '--config.train.eval_every=100',
)


def command(workdir: str) -> list[str]:
  return [sys.executable, '-m', 'gptjax.main', '--config', 'tiny', '--workdir', workdir, *OVERRIDES]


def final_state(workdir: str):
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  leaves = jax.tree.leaves(mngr.restore(step, args=ocp.args.StandardRestore()))
  assert len(leaves) > 20, f'{workdir}: the checkpoint restored as {len(leaves)} arrays'
  return step, [np.asarray(x) for x in leaves]


def identical(a: str, b: str) -> bool:
  (step_a, leaves_a), (step_b, leaves_b) = final_state(a), final_state(b)
  return (
    step_a == step_b
    and len(leaves_a) == len(leaves_b)
    and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))
  )


def run_until_first_checkpoint(workdir: str) -> tuple[subprocess.Popen, float]:
  """Starts a run; returns it and the time it took to finish its first checkpoint."""
  start = time.perf_counter()
  process = subprocess.Popen(
    command(workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  while not os.path.exists(os.path.join(workdir, 'checkpoints', 'fingerprints.json')):
    if process.poll() is not None:
      raise RuntimeError(f'the run in {workdir} ended before its first checkpoint')
    time.sleep(0.02)
  return process, time.perf_counter() - start


def checkpoints_on_disk(workdir: str) -> list[str]:
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--mode', choices=('kill', 'bad_files'), default='kill')
  parser.add_argument('--n', type=int, default=20, help='number of kill-and-restart trials')
  parser.add_argument('--root', default='/tmp/gptjax_fault_drill', help='scratch directory')
  parser.add_argument('--out', default='', help='write the JSON report here too')
  parser.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
  args = parser.parse_args()
  shutil.rmtree(args.root, ignore_errors=True)
  if args.mode == 'bad_files':
    report = bad_files(args.root)
    print(json.dumps({k: v for k, v in report.items() if k != 'details'}))
    if args.out:
      with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    return
  reference = os.path.join(args.root, 'reference')
  process, first_checkpoint_s = run_until_first_checkpoint(reference)
  start = time.perf_counter()
  if process.wait():
    raise RuntimeError('the reference run failed')
  training_s = time.perf_counter() - start
  rng = np.random.default_rng(args.seed)
  trials = []
  for i in range(args.n):
    workdir = os.path.join(args.root, f'trial_{i:02d}')
    kill_after_s = float(rng.uniform(0, training_s))
    process, _ = run_until_first_checkpoint(workdir)
    time.sleep(kill_after_s)
    finished_before_kill = process.poll() is not None
    process.kill()
    process.wait()
    on_disk = checkpoints_on_disk(workdir)
    restart = subprocess.run(command(workdir), cwd=REPO, capture_output=True, text=True)
    trial = {
      'kill_after_first_checkpoint_s': round(kill_after_s, 2),
      'finished_before_kill': finished_before_kill,
      'on_disk_at_kill': on_disk,
      'restart_status': restart.returncode,
      'identical': restart.returncode == 0 and identical(reference, workdir),
    }
    if restart.returncode:
      trial['restart_error'] = restart.stderr.strip().splitlines()[-1:]
    trials.append(trial)
    print(json.dumps({'trial': i, **trial}), flush=True)
    shutil.rmtree(workdir)
  report = {
    'trials': args.n,
    'identical': sum(t['identical'] for t in trials),
    'reference_first_checkpoint_s': round(first_checkpoint_s, 1),
    'reference_rest_s': round(training_s, 1),
    'command': ' '.join(['python -m gptjax.main --config tiny --workdir W', *OVERRIDES]),
    'device': jax.devices()[0].device_kind,
    'details': trials,
  }
  print(json.dumps({k: v for k, v in report.items() if k != 'details'}))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1)


# The bad-files drill: a run of the tiny config on the char tokenizer (so the workdir has a
# tokenizer file) and a generated corpus, checkpoints 10 and 20, each step logged.
FILES_STEPS = 20
FILES_OVERRIDES = (
  '--config.tokenizer.kind=char',
  '--config.tokenizer.vocab_size=300',
  '--config.sample.max_new_tokens=0',
  '--config.data.source=text_files',
  '--config.train.checkpoint_every=10',
  '--config.train.keep_checkpoints=10',
  '--config.train.log_every=1',
  '--config.train.eval_every=10',
  '--config.train.eval_batches=1',
)
# What runs write as they go: not compared before and after.
WRITTEN_BY_RUNS = ('.lock', 'metrics.jsonl', 'tensorboard')


def files_command(workdir: str, corpus: str, steps: int) -> list[str]:
  return [
    sys.executable,
    '-m',
    'gptjax.main',
    '--config',
    'tiny',
    '--workdir',
    workdir,
    *FILES_OVERRIDES,
    f'--config.data.text_files={corpus}',
    f'--config.train.steps={steps}',
  ]


def write_corpus(directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  for f in range(30):
    with open(os.path.join(directory, f'module_{f:03d}.py'), 'w') as out:
      for i in range(40):
        out.write(f'def function_{f}_{i}(value):\n    return value * {i % 7} + {f % 5}\n\n')
  return os.path.join(directory, '*.py')


def tree(workdir: str) -> dict[str, bytes]:
  """Every file of `workdir` but those runs append to, by relative path, with its bytes."""
  files = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), workdir)
      if relative.split(os.sep)[0] not in WRITTEN_BY_RUNS:
        with open(os.path.join(root, name), 'rb') as f:
          files[relative] = f.read()
  return files


def damage(path: str, how: str) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  if how == 'random':  # the same length, every byte different
    garbage = np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8)
    data = (np.frombuffer(data, np.uint8) ^ (garbage | 1)).tobytes()
  else:  # truncated to an odd length
    data = data[: len(data) // 2 | 1]
  with open(path, 'wb') as f:
    f.write(data)


def outcome(result: subprocess.CompletedProcess) -> tuple[str, list[str]]:
  """'ok' (status 0, no error line), 'error' (status 1 or 2, one error: line, last) or 'bad'
  (a traceback, several error lines, or an error line that is not the last thing said); and the
  error and warning lines."""
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  said = [line for line in lines if line.startswith(('error:', 'warning:'))]
  errors = [line for line in lines if 'error:' in line]
  if 'Traceback' in result.stderr:
    return 'bad', said + lines[-3:]
  if result.returncode == 0 and not errors:
    return 'ok', said
  if result.returncode in (1, 2) and len(errors) == 1 and lines[-1] == errors[0]:
    return 'error', said
  return 'bad', said + lines[-3:]


def checkpoint_steps(workdir: str) -> list[int]:
  return sorted(int(d) for d in checkpoints_on_disk(workdir) if d.isdigit())


def logged_steps(workdir: str) -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [row['step'] for row in rows if 'train_loss' in row]


def bad_files(root: str) -> dict:
  """Each file of a trained workdir damaged in turn (random bytes of the same length, and cut
  short), then gptjax.sample, gptjax.evaluate and gptjax.main run on it. A case passes when each
  command ends in one error: line or succeeds (with a warning: where it fell back); the read-only
  commands leave the workdir byte for byte as it was; main moves no good checkpoint and, where it
  trains, resumes from the newest checkpoint that is intact (never from step 0); and with the
  file put back (and a checkpoint set aside returned), main resumes from the newest checkpoint.
  Work lost counts cases where a good file changed or vanished, or main started over."""
  corpus = write_corpus(os.path.join(root, 'corpus'))
  task = os.path.join(root, 'task.jsonl')
  with open(task, 'w') as f:
    for i in range(4):
      f.write(
        json.dumps({'context': f'def function_{i}_1(value):\n    return', 'target': ' value'})
      )
      f.write('\n')
  reference = os.path.join(root, 'reference')
  result = subprocess.run(
    files_command(reference, corpus, FILES_STEPS), cwd=REPO, capture_output=True, text=True
  )
  if result.returncode:
    raise RuntimeError(f'the reference run failed: {result.stderr[-2000:]}')
  newest = os.path.join('checkpoints', str(FILES_STEPS))
  older = os.path.join('checkpoints', str(FILES_STEPS // 2)) + os.sep
  targets = sorted(f for f in tree(reference) if not f.startswith(older))
  cases = [(f, 'random') for f in targets] + [
    (f, 'truncate') for f in targets if not f.startswith(newest + os.sep)
  ]
  details = []
  for i, (relative, how) in enumerate(cases):
    workdir = os.path.join(root, f'case_{i:02d}')
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(reference, workdir)
    path = os.path.join(workdir, relative)
    with open(path, 'rb') as f:
      original = f.read()
    damage(path, how)
    before = tree(workdir)
    case = {'file': relative, 'how': how, 'problems': [], 'work_lost': []}
    read_only = {
      'sample': [sys.executable, '-m', 'gptjax.sample', f'--workdir={workdir}', '--prompt=def'],
      'evaluate': [
        sys.executable,
        '-m',
        'gptjax.evaluate',
        f'--workdir={workdir}',
        f'--task={task}',
        '--batch_size=4',
      ],
    }
    for name, args in read_only.items():
      result = subprocess.run(
        args + (['--max_new_tokens=2'] if name == 'sample' else []),
        cwd=REPO,
        capture_output=True,
        text=True,
      )
      case[name], said = outcome(result)
      case[f'{name}_said'] = said
      if case[name] == 'bad':
        case['problems'].append(f'{name}: {said}')
      if tree(workdir) != before:
        case['work_lost'].append(f'{name} changed the workdir')
    steps_before, logged = checkpoint_steps(workdir), len(logged_steps(workdir))
    result = subprocess.run(
      files_command(workdir, corpus, FILES_STEPS + 5), cwd=REPO, capture_output=True, text=True
    )
    case['main'], case['main_said'] = outcome(result)
    if case['main'] == 'bad':
      case['problems'].append(f'main: {case["main_said"]}')
    after = tree(workdir)
    damaged_checkpoint = relative.startswith(newest + os.sep)
    for name, data in before.items():
      if name == relative or name.startswith('checkpoints' + os.sep + 'fingerprints'):
        continue
      if name == 'config.json':  # main records the new step budget (a resumable field)
        continue
      if damaged_checkpoint and name.startswith(newest + os.sep):
        continue  # may be set aside with the damaged file: checked below
      if after.get(name) != data:
        case['work_lost'].append(f'main changed or removed {name}')
    aside = os.path.join(workdir, 'corrupt_checkpoints')
    set_aside = sorted(os.listdir(aside)) if os.path.isdir(aside) else []
    if set_aside and not damaged_checkpoint:
      case['work_lost'].append(f'main set aside {set_aside} for damage outside a checkpoint')
    if case['main'] == 'ok':
      this_run = logged_steps(workdir)[logged:]
      intact = [step for step in steps_before if not (set_aside and step == FILES_STEPS)]
      expected = max(intact) if intact else 0
      resumed_from = this_run[0] - 1 if this_run else None
      if resumed_from != expected:
        case['problems'].append(f'main resumed from step {resumed_from}, not {expected}')
      if resumed_from == 0:
        case['work_lost'].append('main trained from step 0')
    # Put the file back (and a checkpoint set aside), then train on.
    for name in set_aside:
      target = os.path.join(workdir, 'checkpoints', name.split('-')[0])
      if not os.path.exists(target):
        os.rename(os.path.join(aside, name), target)
    with open(path, 'wb') as f:
      f.write(original)
    newest_before = max(checkpoint_steps(workdir))
    logged = len(logged_steps(workdir))
    result = subprocess.run(
      files_command(workdir, corpus, FILES_STEPS + 10), cwd=REPO, capture_output=True, text=True
    )
    case['restored'], _ = outcome(result)
    steps = logged_steps(workdir)[logged:]
    if case['restored'] != 'ok' or steps != list(range(newest_before + 1, FILES_STEPS + 11)):
      case['problems'].append(
        f'restored: {case["restored"]}, trained steps {steps[:1]}..{steps[-1:]} after '
        f'checkpoint {newest_before} ({outcome(result)[1]})'
      )
    case['passed'] = not case['problems'] and not case['work_lost']
    details.append(case)
    print(json.dumps({'case': i, **case}), flush=True)
    shutil.rmtree(workdir)
  return {
    'mode': 'bad_files',
    'cases': len(details),
    'passed': sum(c['passed'] for c in details),
    'work_lost': sum(bool(c['work_lost']) for c in details),
    'outcomes': {
      command: dict(collections.Counter(c[command] for c in details))
      for command in ('sample', 'evaluate', 'main', 'restored')
    },
    'files': len(targets),
    'command': ' '.join(['python -m gptjax.main --config tiny --workdir W', *FILES_OVERRIDES]),
    'device': jax.devices()[0].device_kind,
    'details': details,
  }


if __name__ == '__main__':
  main()
