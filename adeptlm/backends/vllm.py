"""The vLLM backend (GPU machines): greedy batches and sampled answers with vLLM's own batching."""

from __future__ import annotations

from typing import Iterator, Sequence

from .base import Backend, GenParams


class VLLMBackend(Backend):
    """vLLM for `generate` mode on GPU machines: greedy decoding of the same token-id prompts, with
    vLLM's own continuous batching. Letter and cloze scores need every next-token logit, which vLLM
    does not return (only the top-k log-probabilities), so those modes stay on transformers."""

    name = "vllm"
    scores = False            # vLLM gives top-k log-probabilities, not every next-token logit

    def __init__(self, llm, tokenizer, model_id: str = "model", n_ctx: int = 4096):
        self.llm, self.tokenizer, self.model_id, self.n_ctx = llm, tokenizer, model_id, n_ctx

    @classmethod
    def load(cls, spec: str | None, dtype: str = "auto") -> "VLLMBackend":
        import importlib.util

        from ..errors import AdeptError
        from ..models import adapter_base, load_tokenizer, resolve_model

        if importlib.util.find_spec("vllm") is None:
            raise AdeptError("--backend vllm needs vLLM (pip install vllm, on a machine with a supported GPU)")
        path = resolve_model(spec)
        if adapter_base(path) is not None:
            raise AdeptError(f"{path} is a LoRA adapter: merge it first (adept merge) to evaluate it with vLLM")
        from vllm import LLM

        llm = LLM(model=str(path), tokenizer=str(path), dtype=dtype)
        config = getattr(getattr(llm, "llm_engine", None), "model_config", None)  # vLLM 0.x's LLMEngine
        return cls(llm, load_tokenizer(path), path.name, int(getattr(config, "max_model_len", 4096)))

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids))
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        result = []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            # as HFBackend.generate: the text before the first stop token, without it
            end = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
            result.append(ids[:end])
        return result

    def _tokens(self, ids: list[int], params: GenParams) -> Iterator[int]:
        """The whole sampled answer at once (vLLM's offline engine does not stream), as ids."""
        from vllm import SamplingParams

        sampling = SamplingParams(temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                                  max_tokens=params.max_tokens, stop_token_ids=list(self.stop_ids))
        out = self.llm.generate([{"prompt_token_ids": list(ids)}], sampling, use_tqdm=False)
        yield from out[0].outputs[0].token_ids
