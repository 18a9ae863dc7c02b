"""gptjax: GPT-style Transformers and scaling-law research in JAX/Flax."""
