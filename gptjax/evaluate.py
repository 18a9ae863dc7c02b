"""python -m gptjax.evaluate: zero- and few-shot evaluation (gptjax/downstream/few_shot.py)."""
from gptjax.downstream import few_shot

if __name__ == '__main__':
  few_shot.main()
