"""GPT-2 small (Radford et al. 2019): 12 pre-LN layers, d_model 768, 12 heads, 1,024-token
context, the 50,257-token vocabulary, tied embeddings: 124,439,808 parameters.

Training at this size needs an accelerator (bf16 compute on GPU/TPU).
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.update(n_layers=12, n_heads=12, d_model=768, d_ff=3072, n_ctx=1024, norm='pre')
  config.tokenizer.vocab_size = 50_257
  config.train.update(seq_len=1024, global_batch_size=512, steps=100_000)
  config.train.update(lr=6e-4, warmup_steps=2000)
  return config
