"""A model that trains in seconds on a CPU: for tests and for trying things out."""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.n_layers = 2
  config.model.n_heads = 2
  config.model.d_model = 32
  config.model.d_ff = 128
  config.model.n_ctx = 64
  config.tokenizer.vocab_size = 512
  config.train.seq_len = 32
  config.train.global_batch_size = 8
  config.train.steps = 60
  config.train.warmup_steps = 10
  config.train.lr = 3e-3
  config.train.log_every = 10
  config.train.eval_every = 30
  config.train.eval_batches = 2
  config.train.checkpoint_every = 30
  config.sample.max_new_tokens = 20
  return config
