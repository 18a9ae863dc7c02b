"""GPT-1 fine-tuning (python -m gptjax.finetune), with the paper's settings (Radford et al. 2018,
section 4.1: lr 6.25e-5, batch 32, 3 epochs, warmup over 0.2% of training then linear decay,
dropout 0.1 on the classifier, lambda 0.5).

  --config finetune       the paper's settings
  --config finetune:cpu   small models on a CPU: a higher learning rate and smaller
                                     batches, since 3 epochs of a few thousand examples are only
                                     a few hundred steps

The model and tokenizer come from the run in finetune.init_from, a GPT or a BERT; config.model,
config.bert and config.tokenizer (gptjax/configs/default.py's, documented there) are used only
when init_from is empty.

A BERT run (model.architecture=bert in init_from's config.json) is fine-tuned with the same
config: [CLS] text [SEP] rows, the head on [CLS] (gptjax/downstream/backbones.py). BERT has no
auxiliary LM loss, so it needs finetune.lm_coef=0 (anything else is an error). The other settings
stay GPT-1's; BERT's own (Devlin et al. 2019, A.3: lr 5e-5, 3e-5 or 2e-5, batch 16 or 32, 2 to 4
epochs; warmup over 10% of the steps in its code) are overrides away:
  --config.finetune.lm_coef=0 --config.finetune.lr=3e-5 --config.finetune.warmup_fraction=0.1
"""

import ml_collections

from gptjax.configs import default


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  base = default.get_config()
  config = ml_collections.ConfigDict()
  config.seed = 0  # head init, dropout, the order of examples, and the built-in tasks' examples
  config.model = base.model  # only with init_from='': the model trained from scratch
  config.bert = base.bert  # only with init_from='' and model.architecture='bert'
  config.tokenizer = base.tokenizer  # only with init_from='': trained on the task's training texts
  config.distributed = base.distributed  # multi-host fine-tuning, as in gptjax/configs/default.py

  config.finetune = ft = ml_collections.ConfigDict()
  ft.init_from = ''  # pre-training workdir to start from; '' = a random init of config.model
  ft.random_init = False  # True: init_from's model and tokenizer, but random weights (a baseline)
  ft.task = ''  # built-in task (gptjax.tasks.STDLIB_TASKS), TFDS task (glue/sst2, ...) or JSONL
  ft.num_labels = 0  # classes of a JSONL classification/entailment/similarity task; 0 = inferred
  ft.tfds_data_dir = ''  # TFDS data_dir for TFDS tasks; '' = TFDS's default
  ft.lm_coef = 0.5  # lambda in L3 = L2 + lambda * L1 (the auxiliary LM loss); 0 = off (BERT: 0)
  ft.lr = 6.25e-5  # peak learning rate
  ft.warmup_fraction = 0.002  # linear warmup over this share of the steps, then linear decay to 0
  ft.batch_size = 32  # examples per step (a multiple-choice example is one row per choice)
  ft.eval_batch_size = 64  # examples per step when measuring accuracy
  ft.epochs = 3  # passes over the training split; validation accuracy after each
  ft.head_dropout = 0.1  # dropout on the hidden state at EXTRACT (BERT: [CLS]) before the head
  ft.model_dropout = 0.1  # embedding and residual dropout in the Transformer; -1 = the run's own
  ft.weight_decay = (
    0.01  # AdamW's decoupled weight decay (GPT-1: w = 0.01), not on biases/LN/embeddings
  )
  ft.b1 = 0.9  # Adam betas and epsilon (GPT-1 used Adam's defaults)
  ft.b2 = 0.999
  ft.eps = 1e-8
  ft.grad_clip = 0.0  # clip the global gradient norm to this; 0 = off (GPT-1 does not clip)
  ft.grad_accum_steps = 1  # micro-batches per step (each batch_size / grad_accum_steps)
  ft.nonfinite = 'stop'  # on a NaN/inf loss, gradient or update: 'stop', or 'skip' the step
  ft.max_train_examples = 0  # use only the first N training examples; 0 = all

  if variant == 'cpu':
    ft.lr = 5e-4  # small models on few steps need a larger step than GPT-1's 117M parameters
    ft.batch_size = 16
    ft.epochs = 3
    ft.warmup_fraction = 0.05  # a few steps of warmup rather than 0.2% of a few hundred (< 1)
    ft.model_dropout = 0.0  # the small pre-trained models never saw dropout
    ft.grad_clip = 1.0
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of gptjax/configs/finetune.py; use '' or 'cpu'")
  return config
