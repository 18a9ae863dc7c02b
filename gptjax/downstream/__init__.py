"""What a pre-trained model is for: labelled tasks (tasks.py), zero- and few-shot evaluation
(few_shot.py) and fine-tuning of a GPT or a BERT (finetuning.py, backbones.py)."""
