"""The models: one module per architecture (gpt, bert, encoder_decoder), each with its Flax module,
its objective and its record (architecture.py), found by name in registry.py; the parts they share
(config.py, layers.py, ops.py, losses.py); parameter and FLOP accounting; GPT-2 checkpoints (hf.py).
"""
