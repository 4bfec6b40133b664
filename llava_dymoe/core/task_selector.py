"""Task selectors (torch only): bank weights per sequence for ``assign_rule="given"``.

Four selectors feed ``DyMoEContext.bank_weights`` (``[B, T]``, one row per sequence, one column per task bank):

* ``oracle``: the true task ``i`` of the evaluation, ``w[b] = one_hot(i)`` (an upper bound, not a method:
  no deployed model knows the task of its input).
* ``hide`` (after HiDe-LLaVA, Guo et al., ACL 2025): one image anchor and one text anchor per task, the mean
  feature of the task's training samples.  For an input with image feature ``v`` and text feature ``u``::

      s_t = mean over the modalities present of cos(feature, anchor_t)      (image and text: (c_v + c_u) / 2)
      w   = softmax_t(s / temperature)                                       (HiDe: temperature 0.1)

* ``prism`` (Prism's port of HiDe-LLaVA's selector): the same anchors and ``s``, one-hot on the most similar task,
  ``w = one_hot(argmax_t s_t)`` (the first such task on a tie).
* ``shortlist`` (the ``anchored_keys`` candidate, beyond the papers): the same anchors and ``s``, weight 1 on the
  ``k`` most similar tasks (earlier tasks first on a tie) and 0 elsewhere; the layers' fitted keys then choose one
  bank among them (``core/rules/key_selector.py``).

The features themselves (which model outputs, which tokens) are the host's business
(``integration/task_features.py``); this module only sees tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

#: The modalities a task anchor is kept for, in the order they are stored.
MODALITIES = ("image", "text")
#: Norm floor of the cosine (an all-zero feature has cosine 0 with every anchor).
EPS = 1e-8


def mean_feature(features: Tensor) -> Tensor:
    """The anchor of one task and modality: the mean of its samples' features ``[N, D]`` -> ``[D]`` (fp32)."""
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"mean_feature: expected [N >= 1, D] features, got shape {tuple(features.shape)}")
    return features.float().mean(dim=0)


def cosine_to_anchors(features: Tensor, anchors: Tensor) -> Tensor:
    """``cos(features[b], anchors[t])`` ``[B, T]`` in fp32 for ``features`` ``[B, D]``, ``anchors`` ``[T, D]``."""
    if features.dim() != 2 or anchors.dim() != 2 or features.shape[1] != anchors.shape[1]:
        raise ValueError(f"cosine_to_anchors: features {tuple(features.shape)} and anchors {tuple(anchors.shape)} "
                         "must be [B, D] and [T, D]")
    f = features.float()
    a = anchors.float().to(f.device)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(EPS)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(EPS)
    return f @ a.t()


def task_similarity(features: Mapping[str, Optional[Tensor]], anchors: Mapping[str, Tensor]) -> Tensor:
    """``s`` ``[B, T]``: the mean, over the modalities with both a feature and an anchor, of their cosines."""
    sims = [cosine_to_anchors(features[m], anchors[m]) for m in MODALITIES
            if features.get(m) is not None and anchors.get(m) is not None]
    if not sims:
        raise ValueError(f"task_similarity: no modality has both a feature and an anchor (features: "
                         f"{sorted(k for k, v in features.items() if v is not None)}, anchors: {sorted(anchors)})")
    return torch.stack(sims).mean(dim=0)


def selector_weights(similarity: Tensor, temperature: float) -> Tensor:
    """``softmax(similarity / temperature)`` over the task dimension (the last), fp32."""
    if not temperature > 0:
        raise ValueError(f"selector temperature must be > 0, got {temperature!r}")
    return torch.softmax(similarity.float() / float(temperature), dim=-1)


def argmax_weights(similarity: Tensor) -> Tensor:
    """``one_hot(argmax_t similarity)`` over the task dimension (the last; the first maximum on a tie), fp32."""
    idx = similarity.float().argmax(dim=-1)
    return torch.nn.functional.one_hot(idx, similarity.shape[-1]).to(torch.float32)


def shortlist_weights(similarity: Tensor, k: int) -> Tensor:
    """Weight 1 on the ``min(k, T)`` most similar tasks of each row (a stable sort: the earlier task first on a
    tie), 0 elsewhere; ``[B, T]`` fp32."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"shortlist size must be a whole number >= 1, got {k!r}")
    order = torch.sort(similarity.float(), dim=-1, descending=True, stable=True).indices
    top = order[..., :min(k, similarity.shape[-1])]
    return torch.zeros_like(similarity, dtype=torch.float32).scatter_(-1, top, 1.0)


def one_hot_weights(task_index: int, num_tasks: int, batch: int, device=None) -> Tensor:
    """The oracle: every sequence of the batch uses bank ``task_index`` (0-based) alone, ``[batch, num_tasks]``."""
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"task index {task_index} is out of range for {num_tasks} bank(s)")
    w = torch.zeros(batch, num_tasks, dtype=torch.float32, device=device)
    w[:, task_index] = 1.0
    return w


@dataclass
class TaskAnchors:
    """Per-task anchors: ``anchors[modality]`` is ``[T, D_modality]`` (fp32), ``counts[t]`` the samples behind
    row ``t``.  Rows of earlier tasks are carried bit for bit (``append`` concatenates)."""

    anchors: Dict[str, Tensor]
    counts: Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.counts.shape[0])

    def append(self, new: Mapping[str, Tensor], count: int) -> "TaskAnchors":
        """A new ``TaskAnchors`` with one more task: ``new[modality]`` ``[D]``; the old rows are untouched."""
        if set(new) != set(self.anchors):
            raise ValueError(f"TaskAnchors.append: modalities {sorted(new)} differ from {sorted(self.anchors)}")
        rows = {m: torch.cat([self.anchors[m], new[m].reshape(1, -1).to(self.anchors[m].dtype)]) for m in new}
        return TaskAnchors(rows, torch.cat([self.counts, torch.tensor([int(count)], dtype=self.counts.dtype)]))

    @classmethod
    def first(cls, new: Mapping[str, Tensor], count: int) -> "TaskAnchors":
        return cls({m: v.reshape(1, -1).float() for m, v in new.items()}, torch.tensor([int(count)]))

    def head(self, k: int) -> "TaskAnchors":
        """The anchors of the first ``k`` tasks (``DYMOE_EVAL_MAX_TASKS``)."""
        if not 1 <= k <= self.num_tasks:
            raise ValueError(f"TaskAnchors.head: k={k} outside 1..{self.num_tasks}")
        return TaskAnchors({m: v[:k] for m, v in self.anchors.items()}, self.counts[:k])

    def weights(self, features: Mapping[str, Optional[Tensor]], temperature: float) -> Tensor:
        """HiDe's bank weights ``[B, T]`` for the features of a batch (module docstring)."""
        return selector_weights(task_similarity(features, self.anchors), temperature)

    def choice(self, features: Mapping[str, Optional[Tensor]]) -> Tensor:
        """Prism's bank weights ``[B, T]``: one-hot on the task of the highest similarity (module docstring)."""
        return argmax_weights(task_similarity(features, self.anchors))

    def shortlist(self, features: Mapping[str, Optional[Tensor]], k: int) -> Tensor:
        """The ``k`` most similar tasks per row as 0/1 bank weights ``[B, T]`` (module docstring)."""
        return shortlist_weights(task_similarity(features, self.anchors), k)

    def to_tensors(self) -> Dict[str, Tensor]:
        out = {f"anchor.{m}": v.contiguous() for m, v in self.anchors.items()}
        out["count"] = self.counts.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "TaskAnchors":
        if "count" not in tensors:
            raise ValueError("TaskAnchors.from_tensors: no 'count' tensor")
        counts = tensors["count"]
        anchors = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("anchor.")}
        bad = {m: tuple(v.shape) for m, v in anchors.items() if v.dim() != 2 or v.shape[0] != counts.shape[0]}
        if not anchors or bad:
            raise ValueError(f"TaskAnchors.from_tensors: anchors {bad or 'missing'} do not have one row per task "
                             f"({counts.shape[0]})")
        return cls(anchors, counts)
