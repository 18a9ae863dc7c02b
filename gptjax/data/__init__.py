"""Text in, batches out: where text comes from and how it is split (sources.py), the tokenizers
(tokenizers.py), the caches a workdir keeps of its encoded data (cache.py, atomic.py), the LM's
token windows (windows.py), the encoder-decoder's (source, target) pair rows (pairs.py) and the
standard library's function -> docstring pairs (docstrings.py)."""
