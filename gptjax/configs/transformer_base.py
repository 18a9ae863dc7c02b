"""The base model of "Attention Is All You Need" (Vaswani et al. 2017): 6 encoder and 6 decoder
post-LN layers, d_model 512, 8 heads, d_ff 2048, sinusoidal positions, one 37,000-token vocabulary
shared by source, target and the output projection: 63,082,496 parameters (the paper's Table 3
says 65M; tests/test_encoder_decoder_training.py checks the count).

Trained as in the paper: WMT 2014 English->German from TFDS (wmt14_translate/de-en, which must
be prepared first), Adam with b2 0.98 and eps 1e-9, the warmup-rsqrt schedule over 4,000 steps
(lr = (512 * 4000)^-0.5), dropout 0.1, label smoothing 0.1, 100,000 steps of about 25,000
source and 25,000 target tokens. It needs an accelerator.
"""

from gptjax.configs import default


def get_config():
  config = default.get_config()
  config.model.architecture = 'encoder_decoder'
  config.encoder_decoder.n_encoder_layers = 6
  config.model.n_layers = 6
  config.model.n_heads = 8
  config.model.d_model = 512
  config.model.d_ff = 2048
  config.model.n_ctx = 256
  config.model.norm = 'post'
  config.model.pos_emb = 'sinusoidal'
  config.model.embd_dropout = 0.1
  config.model.resid_dropout = 0.1
  config.tokenizer.vocab_size = 37_000
  config.data.source = 'tfds'
  config.data.tfds_name = 'wmt14_translate/de-en'
  config.data.source_key = 'en'
  config.data.target_key = 'de'
  config.encoder_decoder.source_len = 128
  config.train.seq_len = 128
  config.train.global_batch_size = 256
  config.train.steps = 100_000
  config.train.schedule = 'rsqrt'
  config.train.warmup_steps = 4000
  config.train.lr = (512 * 4000) ** -0.5
  config.train.b2 = 0.98
  config.train.eps = 1e-9
  config.train.weight_decay = 0.0
  config.train.grad_clip = 0.0
  config.encoder_decoder.label_smoothing = 0.1
  config.train.eval_every = 5000
  config.train.checkpoint_every = 5000
  config.sample.max_new_tokens = 128  # the greedy translation of a validation sentence at the end
  return config
