"""GPT-1 (Radford et al. 2018): 12 post-LN layers, d_model 768, 12 heads, 512-token context,
a 40,478-token BPE vocabulary, dropout 0.1 everywhere: 116,534,784 parameters ("117M").

Training on the default corpus at this size needs an accelerator; the paper trained with batch 64
of 512 tokens, Adam lr 2.5e-4 (2,000 warmup steps, cosine to 0) for 100 epochs of BooksCorpus.
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.update(n_layers=12, n_heads=12, d_model=768, d_ff=3072, n_ctx=512, norm='post')
  config.model.update(embd_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1)
  config.model.attention_impl = 'einsum'  # the only implementation with attention dropout
  config.tokenizer.vocab_size = 40_478
  config.train.update(seq_len=512, global_batch_size=64, steps=100_000)
  config.train.update(lr=2.5e-4, warmup_steps=2000, min_lr_ratio=0.0, b2=0.999, weight_decay=0.01)
  return config
