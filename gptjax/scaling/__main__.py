"""python -m gptjax.scaling: scaling-law fits, report and hold-out (gptjax/scaling/laws.py)."""
from gptjax.scaling import laws

if __name__ == '__main__':
  laws.main()
