"""Per-sample seeded sampling: HF's logits warpers, in HF's order, then an inverse-CDF draw.

Why not ``generate(do_sample=True)``: transformers draws every row of a batch from one
global RNG, so a prompt's samples depend on which prompts share its batch and in which
order (the trap the architecture notes warn about). Here every completion owns a stream
of uniforms drawn once from ``torch.Generator().manual_seed(seed)``; step ``t`` of that
completion always consumes uniform ``t``. The token is the first whose cumulative
probability exceeds ``u * total``, so a row's token depends only on its own logits and
its own seed, whatever its batch mates are. Tiny floating-point differences between
batch shapes can still move a CDF boundary across ``u``; that is rare (see the docs).

The warpers mirror ``transformers.generation`` for ``do_sample=True``: repetition
penalty first (on prompt and generated ids), then temperature, top-k, top-p, min-p,
each keeping at least one token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def uniform_stream(seed: int, length: int) -> torch.Tensor:
    """The uniforms completion ``seed`` consumes, one per generated token (float64, CPU)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return torch.rand(length, generator=generator, dtype=torch.float64)


@dataclass(frozen=True)
class Sampler:
    """The applied decoding values; ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    @property
    def uses_history(self) -> bool:
        """Whether sampling needs the ids seen so far (only the repetition penalty does)."""
        return self.repetition_penalty != 1.0

    def distribution(
        self, logits: torch.Tensor, seen: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(probs, index)``: unnormalized probabilities over candidate tokens [rows, k].

        ``index`` maps candidate positions to token ids (None: candidates are the whole
        vocabulary in id order). Filtered tokens keep probability 0.
        """
        scores = logits.float()
        if seen is not None and self.uses_history:
            penalized = torch.where(scores < 0, scores * self.repetition_penalty, scores / self.repetition_penalty)
            scores = torch.where(seen, penalized, scores)
        scores = scores / self.temperature
        vocab = scores.shape[-1]
        index: torch.Tensor | None = None
        if 0 < self.top_k < vocab:
            scores, index = torch.topk(scores, self.top_k, dim=-1)  # sorted, largest first
        elif self.top_p < 1.0 or self.min_p > 0.0:
            scores, index = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(scores, dim=-1)
        if index is not None:
            if self.top_p < 1.0:
                # HF removes tokens whose ascending cumulative mass is <= 1 - top_p, i.e. keeps a
                # token while the mass strictly before it (descending) is below top_p.
                before = torch.cumsum(probs, dim=-1) - probs
                keep = before < self.top_p
                keep[:, 0] = True
                probs = probs * keep
            if self.min_p > 0.0:
                keep = probs >= self.min_p * probs[:, :1]
                keep[:, 0] = True
                probs = probs * keep
        return probs, index

    def pick(self, logits: torch.Tensor, uniforms: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """One token per row of ``logits`` [rows, vocab], drawn with ``uniforms`` [rows]."""
        if self.temperature == 0.0:
            scores = logits.float()
            if seen is not None and self.uses_history:
                penalized = torch.where(scores < 0, scores * self.repetition_penalty, scores / self.repetition_penalty)
                scores = torch.where(seen, penalized, scores)
            return scores.argmax(dim=-1)
        probs, index = self.distribution(logits, seen)
        cdf = torch.cumsum(probs.double(), dim=-1)
        target = (uniforms.to(cdf.device, torch.float64) * cdf[:, -1]).unsqueeze(-1)
        # right=True: the first position whose cdf exceeds the target has positive mass.
        position = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
        if index is None:
            return position.squeeze(-1)
        return index.gather(-1, position).squeeze(-1)
