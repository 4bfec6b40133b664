"""Spherical k-means, for the ``router_init="centroids"`` variant (beyond the paper; torch only).

A cosine router scores a token by the angle between the token and each router row, so the natural
warm start for a new bank's rows is a set of directions that cover the new task's own inputs:
the centroids of spherical k-means (Dhillon & Modha's cosine k-means) on the unit-normalised tokens.

    given unit tokens u_n and k unit centroids m_j:
        assign  a(n) = argmax_j <u_n, m_j>
        update  m_j = normalise(sum_{n: a(n) = j} u_n)

Initial centroids: k-means++ seeding on the cosine distance 1 - <u, m> (deterministic for a generator).
A cluster that loses all its tokens is re-seeded with the token farthest from its own centroid.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .routing import NORM_EPS


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)


def spherical_kmeans(x: Tensor, k: int, iters: int = 20, generator: Optional[torch.Generator] = None,
                     init: Optional[Tensor] = None) -> Tensor:
    """``k`` unit centroids ``[k, d]`` (fp32, fp64 stays fp64) of the tokens ``x`` ``[N, d]``.

    Needs ``N >= 1``; with fewer distinct tokens than ``k`` some centroids repeat (each still a token's
    direction).  Stops early when no assignment changes.  ``init`` (``[k, d]``, any norms): start from these
    directions instead of k-means++ seeding, so centroid j stays the cluster row j started as (used to
    re-centre rows that experts were already trained behind).
    """
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"spherical_kmeans: x must be [N >= 1, d], got {tuple(x.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"spherical_kmeans: k must be an int >= 1, got {k!r}")
    dt = torch.promote_types(x.dtype, torch.float32)
    u = _unit(x.to(dt))
    n = u.shape[0]
    if init is not None:
        if init.dim() != 2 or tuple(init.shape) != (k, u.shape[1]):
            raise ValueError(f"spherical_kmeans: init must be [{k}, {u.shape[1]}], got {tuple(init.shape)}")
        return _lloyd(u, _unit(init.to(device=u.device, dtype=dt)), k, iters)
    # k-means++ seeding on 1 - cos
    first = int(torch.randint(n, (1,), generator=generator, device="cpu"))
    cent = [u[first]]
    dist = (1.0 - u @ u[first]).clamp_min(0.0)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0.0:  # every token sits on a chosen direction already
            idx = int(torch.randint(n, (1,), generator=generator, device="cpu"))
        else:
            probs = (dist / total).cpu()
            idx = int(torch.multinomial(probs, 1, generator=generator))
        cent.append(u[idx])
        dist = torch.minimum(dist, (1.0 - u @ u[idx]).clamp_min(0.0))
    return _lloyd(u, torch.stack(cent), k, iters)


def _lloyd(u: Tensor, m: Tensor, k: int, iters: int) -> Tensor:
    """Lloyd iterations on unit tokens ``u`` from unit centroids ``m`` (empty clusters re-seeded)."""
    assign = None
    for _ in range(max(1, iters)):
        sim = u @ m.t()
        new_assign = sim.argmax(dim=1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(m).index_add_(0, assign, u)
        counts = torch.bincount(assign, minlength=k)
        for j in (counts == 0).nonzero().flatten().tolist():  # re-seed an empty cluster
            far = int((sim.gather(1, assign[:, None]).squeeze(1)).argmin())
            sums[j] = u[far]
        m = _unit(sums)
    return m
