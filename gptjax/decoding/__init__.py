"""Generation: a GPT's key/value-cache sampling (sampling.py) and the encoder-decoder's greedy and
beam search (seq2seq.py)."""
