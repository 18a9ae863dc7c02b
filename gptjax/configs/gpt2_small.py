"""GPT-2 small (Radford et al. 2019): 12 pre-LN layers, d_model 768, 12 heads, 1,024-token
context, the 50,257-token vocabulary, tied embeddings: 124,439,808 parameters.

Training at this size needs an accelerator (bf16 compute on GPU/TPU).
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.n_layers = 12
  config.model.n_heads = 12
  config.model.d_model = 768
  config.model.d_ff = 3072
  config.model.n_ctx = 1024
  config.model.norm = 'pre'
  config.tokenizer.vocab_size = 50_257
  config.train.seq_len = 1024
  config.train.global_batch_size = 512
  config.train.lr = 6e-4
  config.train.warmup_steps = 2000
  config.train.steps = 100_000
  return config
