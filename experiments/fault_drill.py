"""Fault drill: kill a training run with SIGKILL at N random moments, restart it, and count how many
restarted runs end bitwise identical to an uninterrupted reference run.

  python experiments/fault_drill.py --n 20 --root /tmp/fault_drill \
      --out experiments/results/fault_drill.json

Each trial starts the tiny config in a fresh workdir, waits for its first checkpoint, kills it after
a further delay drawn uniformly from the reference run's time between its first checkpoint and its
end (so kills land in training steps, evaluations and checkpoint writes, not in start-up), restarts
the same command, and compares every array of the final checkpoint (parameters, optimizer state,
step, RNG) with the reference's.
"""

import argparse
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
  parser.add_argument('--n', type=int, default=20, help='number of kill-and-restart trials')
  parser.add_argument('--root', default='/tmp/gptjax_fault_drill', help='scratch directory')
  parser.add_argument('--out', default='', help='write the JSON report here too')
  parser.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
  args = parser.parse_args()
  shutil.rmtree(args.root, ignore_errors=True)
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


if __name__ == '__main__':
  main()
