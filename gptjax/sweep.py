"""python -m gptjax.sweep: run a sweep (gptjax/scaling/sweep.py)."""
from gptjax.scaling import sweep

if __name__ == '__main__':
  sweep.main()
