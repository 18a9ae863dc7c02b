"""python -m gptjax.tasks: the built-in tasks as JSONL (gptjax/downstream/tasks.py)."""
from gptjax.downstream import tasks

if __name__ == '__main__':
  tasks.main()
