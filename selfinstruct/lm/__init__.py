"""LM backends, by name. Only the `hf` backend imports torch/transformers, and only when used; `openai` talks HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from selfinstruct.lm.base import LM, Completion, GenerationParams

if TYPE_CHECKING:  # config validates model.backend against BACKENDS below, so it imports this module
    from selfinstruct.config import ModelConfig

__all__ = ["LM", "Completion", "GenerationParams", "load_lm", "BACKENDS"]


def _hf(cfg: ModelConfig) -> LM:
    from selfinstruct.lm.hf import HFBackend

    return HFBackend(cfg.name, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                     chat_template=cfg.chat_template, trust_remote_code=cfg.trust_remote_code,
                     allow_pickle=cfg.allow_pickle)


def _fake(cfg: ModelConfig) -> LM:
    from selfinstruct.lm.fake import FakeLM

    return FakeLM(name=f"fake:{cfg.name}")


def _openai(cfg: ModelConfig) -> LM:
    from selfinstruct.lm.openai import OpenAIBackend

    return OpenAIBackend(cfg.base_url, cfg.name, endpoint=cfg.endpoint, api_key_env=cfg.api_key_env,
                         concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)


BACKENDS: dict[str, Callable[[ModelConfig], LM]] = {"hf": _hf, "fake": _fake, "openai": _openai}  # model.backend names


def load_lm(cfg: ModelConfig) -> LM:
    return BACKENDS[cfg.backend](cfg)
