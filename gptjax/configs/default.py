"""The default run: a small GPT-2-style model on the Python standard library, minutes on a CPU.

Every field gptjax reads is here, with what it means; the other configs start from this one.
Override any field on the command line: --config.model.n_layers=2
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init, dropout and batch order all derive from it

  config.model = model = ml_collections.ConfigDict()
  model.architecture = 'gpt'  # 'gpt' (decoder), 'bert' (encoder, masked LM) or 'encoder_decoder'
  model.n_layers = 4  # blocks of the decoder (gpt, encoder_decoder) or of the encoder (bert)
  model.n_heads = 4
  model.d_model = 192
  model.d_ff = 768  # MLP hidden width; 4 * d_model in GPT-1/2
  model.n_ctx = 128  # context window (learned position table size)
  model.norm = 'pre'  # 'pre' (GPT-2: x + f(LN(x))) or 'post' (GPT-1: LN(x + f(x)))
  model.pos_emb = 'learned'  # 'learned' (GPT-1/2, BERT), 'sinusoidal' (Vaswani et al. 2017) or
  # 'rotary' (Su et al. 2021: queries and keys rotated by position inside attention)
  model.tie_embeddings = True  # output projection = token embedding transposed (encoder_decoder:
  # also one embedding for source and target)
  model.embd_dropout = 0.0  # dropout on token + position embeddings
  model.attn_dropout = 0.0  # dropout on attention probabilities (needs attention_impl='einsum')
  model.resid_dropout = 0.0  # dropout on each sublayer's output
  model.attention_impl = 'einsum'  # 'einsum' (written out; fastest on CPU), or 'xla' / 'cudnn'
  # (jax.nn.dot_product_attention; 'cudnn' is the fused kernel for NVIDIA GPUs)
  model.dtype = 'float32'  # compute dtype of the matmuls; 'bfloat16' on GPU/TPU and AMX CPUs
  model.param_dtype = 'float32'  # parameter (and optimizer state) dtype
  model.remat = 'none'  # backward-pass recomputation: 'none', 'full' (least memory, ~1/3 more
  # compute) or 'dots_saveable' (keeps matmul outputs, recomputes elementwise ops)
  model.scan_layers = False  # jax.lax.scan over the blocks: compile time flat in depth
  model.init_std = 0.02  # N(0, init_std) init; residual projections get init_std / sqrt(2 n_layers)
  model.layer_norm_eps = 1e-5
  # How init, learning rates and multipliers scale with size (gptjax/models/parametrization.py):
  # 'sp' (standard) or 'mup' (Yang et al. 2021), whose multipliers are relative to a model of
  # width base_d_model: tune train.lr there and it transfers to wider models.
  model.parametrization = 'sp'
  model.base_d_model = 0  # needed by 'mup'
  model.mup_output_multiplier = 1.0  # 'mup' logits (h / m) . e times this (tune it at the base)
  model.depth_scaling = 'none'  # or 'completep' (Dey et al. 2025): residual branches scaled by
  model.base_n_layers = 0  # base_n_layers / n_layers, so train.lr transfers across depth

  config.tokenizer = tokenizer = ml_collections.ConfigDict()
  tokenizer.kind = 'sentencepiece'  # 'sentencepiece' (BPE), 'byte', 'char' or 'gpt2' (convert)
  tokenizer.vocab_size = 4096  # for 'sentencepiece' and 'char'; 'byte' always has 262

  config.data = data = ml_collections.ConfigDict()
  data.source = 'stdlib'  # 'stdlib' (this Python's own source), 'text_files' or 'tfds'; for an
  # encoder_decoder, (source, target) pairs: 'stdlib_docstrings' (function -> first sentence of its
  # docstring), 'pairs_jsonl' or 'tfds'
  data.text_files = ''  # with source='text_files': a glob or a directory, e.g. '~/data/*.txt'
  data.tfds_name = ''  # with source='tfds': e.g. 'tiny_shakespeare', prepared as ArrayRecord
  data.tfds_data_dir = ''  # TFDS data_dir; '' = TFDS's default (~/tensorflow_datasets)
  data.tfds_text_key = 'text'  # the feature that holds the text
  data.tfds_train_split = 'train'
  data.tfds_eval_split = 'validation'
  data.pairs_files = ''  # with source='pairs_jsonl': a glob of JSONL files, one pair per line
  data.source_key = 'source'  # pairs: the JSONL field / TFDS feature of the source (e.g. 'de')
  data.target_key = 'target'  # pairs: the JSONL field / TFDS feature of the target (e.g. 'en')
  data.val_fraction = 0.02  # share of documents held out for validation (non-TFDS sources)
  data.max_documents = 0  # use only the first N documents; 0 = all
  data.max_train_tokens = 0  # train on only D tokens (scaling-law data axis); 0 = all
  data.train_subset = 'first'  # which D: the 'first' tokens, or 4K-token pieces 'spread' over all

  config.train = train = ml_collections.ConfigDict()
  train.seq_len = 128  # tokens per training window (encoder_decoder: per target), at most n_ctx
  train.global_batch_size = 32  # sequences per optimizer step, over all devices and hosts
  train.grad_accum_steps = 1  # micro-batches per step (each global_batch_size / grad_accum_steps)
  train.steps = 450  # optimizer steps
  train.lr = 2e-3  # peak learning rate
  train.warmup_steps = 50  # linear warmup from 0, then the schedule's decay
  train.schedule = 'cosine'  # 'cosine' to min_lr_ratio * lr at train.steps; 'linear' to it
  # (GPT-1 fine-tuning's); or 'rsqrt': lr * sqrt(warmup_steps / step), "Attention Is All You Need"
  train.min_lr_ratio = 0.1
  train.b1 = 0.9  # AdamW betas and epsilon
  train.b2 = 0.95
  train.eps = 1e-8
  train.weight_decay = 0.1  # decoupled; not applied to biases, LayerNorm and embeddings
  train.grad_clip = 1.0  # clip the global gradient norm to this; 0 = off
  train.sharding = 'replicate'  # parameters and optimizer state: 'replicate' or 'fsdp'
  train.log_every = 25  # steps between train metrics
  train.eval_every = 150  # steps between evaluations (and at the end)
  # Global batches of validation windows per evaluation, spread evenly over the validation split
  # (0: the whole split); the results report their standard error, from the batch means.
  train.eval_batches = 8
  train.final_eval_batches = -1  # the evaluation after the last step: -1 as eval_batches, 0 whole
  train.checkpoint_every = 150  # steps between checkpoints (and at the end)
  train.keep_checkpoints = 3  # most recent checkpoints kept
  train.nonfinite = 'stop'  # on a NaN/inf loss or gradient: 'stop', or 'skip' the step (counted)
  train.preemption_grace_s = 120.0  # after SIGTERM, save and exit; force exit after this long

  # Settings of one architecture only, read by its record (gptjax/models/).
  config.bert = bert = ml_collections.ConfigDict()
  bert.type_vocab_size = 2  # segment embeddings (sentence A / B)
  bert.mlm_probability = 0.15  # share of tokens chosen for masked-LM prediction

  config.encoder_decoder = encoder_decoder = ml_collections.ConfigDict()
  encoder_decoder.n_encoder_layers = 0  # encoder blocks (model.n_layers counts the decoder's)
  encoder_decoder.source_len = 128  # source tokens per example (longer ones are cut)
  encoder_decoder.label_smoothing = 0.0  # target smoothing (0.1 in Vaswani et al.)

  config.sample = sample = ml_collections.ConfigDict()
  sample.prompt = 'def '  # printed with its continuation at the end of training
  sample.max_new_tokens = 200
  sample.temperature = 0.8  # 0 = greedy
  sample.top_k = 40  # sample among the k most likely tokens; 0 = all

  # Where metrics go besides WORKDIR/metrics.jsonl and WORKDIR/tensorboard (always written).
  config.logging = log = ml_collections.ConfigDict()
  log.wandb = False  # also log to Weights & Biases (needs `pip install wandb`): one W&B run per
  # workdir, continued when the run resumes; W&B's own settings come from its environment
  # (WANDB_MODE=offline, WANDB_API_KEY, WANDB_DIR: its files' place, by default WORKDIR/wandb)
  log.wandb_project = 'gptjax'
  log.wandb_entity = ''  # the W&B user or team; '' = your default one
  log.wandb_name = ''  # the run's display name; '' = the workdir's name
  log.wandb_tags = ''  # comma-separated, e.g. 'baseline,mup'
  log.wandb_group = ''  # W&B shows a group's runs together; gptjax.sweep sets its root's name

  config.distributed = distributed = ml_collections.ConfigDict()
  distributed.initialize = False  # call jax.distributed.initialize() (multi-host runs)
  # Each of these falls back to the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  # JAX_PROCESS_ID), then to JAX's cluster detection (TPU pods, SLURM, Open MPI).
  distributed.coordinator_address = ''  # host:port of process 0
  distributed.num_processes = 0  # 0 = from the environment
  distributed.process_id = -1  # -1 = from the environment
  return config
