"""python -m gptjax.finetune: GPT-1 fine-tuning (gptjax/downstream/finetuning.py)."""
from gptjax.downstream import finetuning

if __name__ == '__main__':
  finetuning.main()
