"""What a pre-trained model is for: labelled tasks (tasks.py), zero- and few-shot evaluation
(few_shot.py) and GPT-1 fine-tuning (finetuning.py)."""
