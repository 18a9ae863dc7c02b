"""Training: the train state and parameters read back (state.py), the jitted step (step.py), the
loop (trainer.py), AdamW and its schedules (optimizer.py), orbax checkpoints (checkpoint.py), the
workdir's config and lock (workdir.py), the device mesh (sharding.py), metrics.jsonl and
TensorBoard (metrics.py), and the speed harness (benchmark.py).
"""
