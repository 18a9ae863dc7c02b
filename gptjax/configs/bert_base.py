"""BERT-base (Devlin et al. 2019): a 12-layer post-LN encoder, d_model 768, 12 heads, d_ff 3072,
512 positions, two segment types, LayerNorm eps 1e-12, and the masked-LM head; a 30,522-token
vocabulary ([MASK] is the last id, after the tokenizer's 30,521). 109,514,298 parameters: the
reference BertForMaskedLM (BertModel without its pooler, 108,891,648, plus the MLM head's
transform, LayerNorm and output bias); tests/test_bert.py checks the count against transformers.

The paper's pre-training recipe on the default corpus: batch 256 of 128 tokens, Adam lr 1e-4
with 10,000 warmup steps and decay to 0, weight decay 0.01, dropout 0.1, 15 % of tokens masked.
It needs an accelerator.
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.architecture = 'bert'
  config.model.update(n_layers=12, n_heads=12, d_model=768, d_ff=3072, n_ctx=512, norm='post')
  config.model.update(layer_norm_eps=1e-12, embd_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1)
  config.tokenizer.vocab_size = 30_521
  config.train.update(seq_len=128, global_batch_size=256, steps=1_000_000)
  config.train.update(lr=1e-4, warmup_steps=10_000, min_lr_ratio=0.0, b2=0.999, eps=1e-6)
  config.train.update(weight_decay=0.01, eval_every=10_000, checkpoint_every=10_000)
  config.bert.mlm_probability = 0.15
  config.sample.max_new_tokens = 0  # an encoder does not generate
  return config
