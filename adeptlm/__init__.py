"""adeptlm: make a general LLM an expert in a subject, and prove it."""

__version__ = "0.1.0"
