"""gptjax: GPT-style Transformers and scaling-law research in JAX/Flax.

  models/      the architectures (GPT, BERT, the encoder-decoder), their parts, losses and records
  data/        tokenizers, text sources, the token and pair caches, batches
  training/    train state, the jitted step, the loop, checkpoints, sharding, the benchmark
  decoding/    sampling with a key/value cache, greedy and beam search
  downstream/  labelled tasks, zero- and few-shot evaluation, fine-tuning
  scaling/     sweeps, scaling-law fits, bootstrap, hold-out and the report
  configs/     the shipped configs (`--config tiny`)
  configuration.py, cli.py, errors.py   the run config's fields and checks; the command-line
               harness; the exception types
  main.py, sample.py, ...   the command lines (python -m gptjax.main, ...)

Array names end in their shape, one letter per dimension, the same letter meaning the same thing
in every module (x_BxLxD):

  B batch           L sequence (query positions)    S key / source positions
  T target tokens   D model width                   H attention heads
  K head width      F feed-forward width            V vocabulary
  W columns of a training batch's rows              R rows per example (fine-tuning)
  N a flattened leading axis, named where it is made (N = B * R, N = B * beams, ...)

Dimensions that belong to one module are spelled as words: beams, choices, chunks, classes.
"""
