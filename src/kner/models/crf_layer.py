"""A batched linear-chain CRF layer for PyTorch, with optional IOB2 transition constraints.

Hand-written rather than taken from a package (pytorch-crf is unmaintained and has no
constraints): the forward algorithm and Viterbi below are batched over sentences and masked,
so one left-aligned padded batch is scored or decoded with one loop over time steps.
Correctness is checked against brute-force enumeration in tests/test_bilstm_crf.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..align import may_follow

FORBIDDEN = -1e4
"""Score added to a forbidden transition: finite (so logsumexp never sees -inf - -inf = nan)
yet large enough that exp(FORBIDDEN) vanishes in float32."""


def iob2_allowed(tags: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``allowed[i, j]``: may tag ``j`` follow tag ``i``; ``start[j]``: may a sentence start with
    ``j``, by :func:`kner.align.may_follow` (an ``I-X`` only continues ``B-X`` or ``I-X``)."""
    allowed = torch.tensor([[may_follow(prev, tag) for tag in tags] for prev in tags])
    start = torch.tensor([may_follow(None, tag) for tag in tags])
    return allowed, start


class CRF(nn.Module):
    """Transition, start and end scores over ``num_tags`` tags.

    Every method takes emissions ``(batch, seq, tags)`` and a bool ``mask`` ``(batch, seq)`` whose
    true entries form a non-empty prefix of each row (left-aligned padding).
    """

    def __init__(self, num_tags: int, allowed: torch.Tensor | None = None, start_allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # (from, to)
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        ones = torch.ones(num_tags, dtype=torch.bool)
        self.register_buffer("allowed", allowed if allowed is not None else ones[:, None] & ones)
        self.register_buffer("start_allowed", start_allowed if start_allowed is not None else ones)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition, start and end scores with the forbidden ones pushed to FORBIDDEN."""
        trans = self.transitions.masked_fill(~self.allowed, FORBIDDEN)
        start = self.start.masked_fill(~self.start_allowed, FORBIDDEN)
        return trans, start, self.end

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``log Z`` per sentence ``(batch,)`` by the forward algorithm."""
        trans, start, end = self._scores()
        alpha = start + emissions[:, 0]  # (batch, tags)
        for t in range(1, emissions.size(1)):
            # (batch, from, 1) + (from, to) -> logsumexp over from -> (batch, to)
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of the tag sequence ``tags`` ``(batch, seq)`` per sentence."""
        trans, start, end = self._scores()
        maskf = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (batch, seq)
        score = start[tags[:, 0]] + (emit * maskf).sum(1)
        score = score + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return score + end[last]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the gold ``tags`` per sentence ``(batch,)``."""
        return self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The best tag sequence per sentence by Viterbi ``(batch, seq)``; padding holds junk."""
        trans, start, end = self._scores()
        batch, seq, n = emissions.shape
        identity = torch.arange(n, device=emissions.device).expand(batch, n)
        score = start + emissions[:, 0]  # (batch, tags)
        pointers = []
        for t in range(1, seq):
            best, arg = (score.unsqueeze(2) + trans).max(dim=1)  # (batch, to): best from-tag
            keep = mask[:, t, None]
            score = torch.where(keep, best + emissions[:, t], score)
            # Padding points each tag to itself, so backtracking walks through it unchanged.
            pointers.append(torch.where(keep, arg, identity))
        cur = (score + end).argmax(dim=1)  # (batch,)
        path = [cur]
        for arg in reversed(pointers):
            cur = arg.gather(1, cur.unsqueeze(1)).squeeze(1)
            path.append(cur)
        return torch.stack(path[::-1], dim=1)
