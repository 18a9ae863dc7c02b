"""A small encoder-decoder that trains in about a minute on a CPU: Python function source ->
the first sentence of its docstring, from this Python's standard library (gptjax/pairs.py), with
5 % of the modules held out for validation.

init_std is 0.1, not 0.02: the token embeddings are multiplied by sqrt(d_model) (8 here) and must
not be drowned by the sinusoids (amplitude 1). With 0.02 a model this small learned the targets'
language but not to read the source.
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.architecture = 'encoder_decoder'
  config.encoder_decoder.n_encoder_layers = 2
  config.model.n_layers = 2
  config.model.n_heads = 4
  config.model.d_model = 64
  config.model.d_ff = 256
  config.model.n_ctx = 128
  config.model.norm = 'post'
  config.model.pos_emb = 'sinusoidal'
  config.model.init_std = 0.1
  config.tokenizer.vocab_size = 1024
  config.data.source = 'stdlib_docstrings'
  config.data.val_fraction = 0.05
  config.encoder_decoder.source_len = 128
  config.train.seq_len = 32
  config.train.global_batch_size = 32
  config.train.steps = 300
  config.train.schedule = 'rsqrt'
  config.train.warmup_steps = 50
  config.train.lr = 2e-3
  config.encoder_decoder.label_smoothing = 0.1
  config.train.log_every = 50
  config.train.eval_every = 150
  config.train.eval_batches = 4
  config.train.checkpoint_every = 150
  config.sample.max_new_tokens = 32
  return config
