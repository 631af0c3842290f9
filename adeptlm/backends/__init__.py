"""Model backends behind one interface (base.Backend): transformers, llama.cpp and vLLM.

Scoring (`last_logits`, `continuation_logprobs`) serves the exams, perplexity and export check;
`generate` greedy batches of ids; `stream` sampled text for chat and serve; `chat_prompt`,
`stop_ids`, `encode` and `count` are the one way prompts become ids. vLLM returns no full logits,
so it has no scoring methods.
"""

from .base import Backend, Delta, GenParams, ScoreRequest, stop_ids, text_deltas
from .hf import HFBackend, chat_greedy, plan_batches
from .llamacpp import LlamaCppBackend
from .vllm import VLLMBackend

__all__ = ["Backend", "Delta", "GenParams", "ScoreRequest", "stop_ids", "text_deltas", "HFBackend", "chat_greedy",
           "plan_batches", "LlamaCppBackend", "VLLMBackend"]
