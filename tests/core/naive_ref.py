"""Independent naive per-token references for the DyMoE core (method.md §1–§3).

Written from the formulas, one token and one expert at a time, with Python control flow; nothing here
imports ``llava_dymoe``.  Everything is differentiable through torch scalar ops so gradients can be compared
with ``torch.autograd.grad``.
"""
import math

import torch


def _f(t):
    return float(t.detach())


def _norm(v, eps):
    return torch.clamp(torch.sqrt((v * v).sum()), min=eps)


def cosine(x, w, scale=1.0, eps=1e-6):
    """z[n, e] = scale * <x_n/|x_n|, w_e/|w_e|>  (or x.w when scale <= 0)."""
    rows = []
    for n in range(x.shape[0]):
        row = []
        for e in range(w.shape[0]):
            dot = (x[n] * w[e]).sum()
            row.append(scale * dot / (_norm(x[n], eps) * _norm(w[e], eps)) if scale > 0 else dot)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def use_new(z_row, n_old, tau):
    """TAG decision for one token (python floats)."""
    vals = [_f(v) for v in z_row]
    if n_old == 0 or n_old == len(vals):
        return False
    c_old, c_new = max(vals[:n_old]), max(vals[n_old:])
    denom = max(abs(c_new), abs(c_old))
    d_rel = 0.0 if denom == 0 else abs(c_new - c_old) / denom
    return d_rel > tau and c_new > c_old


def tag(z, n_old, tau):
    """bool [N, E] allowed mask."""
    out = []
    for n in range(z.shape[0]):
        if n_old == 0:
            out.append([True] * z.shape[1])
            continue
        new = use_new(z[n], n_old, tau)
        out.append([(e >= n_old) == new for e in range(z.shape[1])])
    return torch.tensor(out, dtype=torch.bool)


def gate_row(z_row, top_k, temperature, allowed_row=None):
    """Weights of one token: top-k among allowed experts, softmax(z/T) over them, 0 elsewhere."""
    e_count = z_row.shape[0]
    cands = [e for e in range(e_count) if allowed_row is None or bool(allowed_row[e])]
    cands.sort(key=lambda e: -_f(z_row[e]))
    chosen = cands[:top_k]
    weights = [z_row.new_zeros(()) for _ in range(e_count)]
    if chosen:
        zmax = max(_f(z_row[e]) for e in chosen)
        exps = {e: torch.exp((z_row[e] - zmax) / temperature) for e in chosen}
        total = sum(exps.values())
        for e in chosen:
            weights[e] = exps[e] / total
    return torch.stack(weights)


def gate(z, top_k, temperature, allowed=None):
    return torch.stack([gate_row(z[n], top_k, temperature, None if allowed is None else allowed[n])
                        for n in range(z.shape[0])])


def _mean_over(values, valid):
    keep = [v for n, v in enumerate(values) if valid is None or bool(valid.reshape(-1)[n])]
    if not keep:
        return values[0] * 0.0 if values else torch.zeros(())
    return sum(keep) / len(keep)


def exclusivity(z, n_old, top_k, temperature, valid=None):
    vals = []
    for n in range(z.shape[0]):
        w = gate_row(z[n], top_k, temperature)
        vals.append(sum(w[:n_old]) * sum(w[n_old:]))
    return _mean_over(vals, valid)


def specialization(z, n_old, top_k, temperature, valid=None):
    """Textbook BCE: -(y log g_new + (1 - y) log(1 - g_new)), y = 1 - max old weight (detached)."""
    vals = []
    for n in range(z.shape[0]):
        w = gate_row(z[n], top_k, temperature)
        g_new = sum(w[n_old:])
        y = min(1.0, max(0.0, 1.0 - max(_f(v) for v in w[:n_old])))
        vals.append(-(y * torch.log(torch.clamp(g_new, min=1e-8))
                      + (1 - y) * torch.log(torch.clamp(1 - g_new, min=1e-8))))
    return _mean_over(vals, valid)


def balance(z, n_old, top_k, temperature, valid=None):
    """M * sum_e f_e P_e over the new experts (Switch style; see losses.new_expert_balance_loss)."""
    m = z.shape[1] - n_old
    k = min(top_k, m)
    idx = [n for n in range(z.shape[0]) if valid is None or bool(valid.reshape(-1)[n])]
    if not idx:
        return z.sum() * 0.0
    f = [0.0] * m
    big_p = [z.new_zeros(()) for _ in range(m)]
    for n in idx:
        u = z[n, n_old:]
        top = sorted(range(m), key=lambda e: -_f(u[e]))[:k]
        for e in top:
            f[e] += 1.0 / (k * len(idx))
        p = torch.softmax(u / temperature, dim=0)
        for e in range(m):
            big_p[e] = big_p[e] + p[e] / len(idx)
    return m * sum(f[e] * big_p[e] for e in range(m))


def rel_gap(a, b, gap="similarity", scale=1.0):
    """|a - b| over the larger |score| (similarity) or the larger cosine distance scale - score (distance)."""
    denom = max(abs(a), abs(b)) if gap == "similarity" else max(scale - a, scale - b, 0.0)
    return 0.0 if denom == 0 else abs(a - b) / denom


def cascade_bank(z_row, experts_per_bank, tau, gap_kind="similarity", scale=1.0):
    """Bank of one token under the cascade rule: walk from the newest bank down; bank b takes the token when
    its best score beats the best score of every earlier bank with relative gap > tau; else bank 0."""
    vals = [_f(v) for v in z_row]
    n_banks = len(vals) // experts_per_bank
    best = [max(vals[b * experts_per_bank:(b + 1) * experts_per_bank]) for b in range(n_banks)]
    for b in range(n_banks - 1, 0, -1):
        c_b, c_before = best[b], max(best[:b])
        gap = rel_gap(c_b, c_before, gap_kind, scale)
        if gap > tau and c_b > c_before:
            return b
    return 0


def sequence_banks(x, key_rows, experts_per_bank, tau, gap_kind="similarity", scale=1.0, valid=None,
                   shortlist=None):
    """``bank_scope="sequence"``, one token at a time: per sequence of ``x`` ``[B, S, in]``, the mean over its
    valid tokens (all when none is valid) of each bank's best cosine to ``key_rows``, then the cascade's walk
    from the newest bank down on these means; returns the bank of every token, a list of B * S ints.
    ``shortlist``: per sequence, the banks it may take (the walk visits only those, the earliest is the fallback)."""
    out = []
    for b in range(x.shape[0]):
        rows = [s for s in range(x.shape[1]) if valid is None or bool(valid[b][s])] or list(range(x.shape[1]))
        sums = None
        for s in rows:
            z = [_f(v) for v in cosine(x[b, s][None], key_rows, scale)[0]]
            best = [max(z[k * experts_per_bank:(k + 1) * experts_per_bank]) for k in range(len(z) // experts_per_bank)]
            sums = best if sums is None else [p + q for p, q in zip(sums, best)]
        mean = [v / len(rows) for v in sums]
        banks = sorted(shortlist[b]) if shortlist is not None else list(range(len(mean)))
        bank = banks[0]
        for j in range(len(banks) - 1, 0, -1):
            before = max(mean[i] for i in banks[:j])
            if rel_gap(mean[banks[j]], before, gap_kind, scale) > tau and mean[banks[j]] > before:
                bank = banks[j]
                break
        out += [bank] * x.shape[1]
    return out


def specialization_with_target(z, n_old, top_k, temperature, target, valid=None):
    """BCE of g_new against a given per-token target (1 = TAG calls the token new)."""
    vals = []
    for n in range(z.shape[0]):
        w = gate_row(z[n], top_k, temperature)
        g_new = sum(w[n_old:])
        y = float(target[n])
        vals.append(-(y * torch.log(torch.clamp(g_new, min=1e-8))
                      + (1 - y) * torch.log(torch.clamp(1 - g_new, min=1e-8))))
    return _mean_over(vals, valid)


def layer_forward(x, weight, bias, banks, experts_per_task, expert_rank, scaling, top_k, temperature,
                  router_scale=1.0, tag_tau=None, cascade_tau=None, cascade_gap="similarity", keys=None,
                  token_banks=None):
    """y_n = W0 x_n + b + scaling * sum_e g_e B_e A_e x_n, one token at a time (no dropout).

    ``banks``: list of (A [E*r, in], B [out, E*r], R [E, in]); ``tag_tau`` not None -> TAG with the last
    bank as the new group; ``cascade_tau`` not None -> only the experts of ``cascade_bank``'s bank, the bank
    chosen on the cosines to ``keys`` (one [E, in] per bank) when given, else to the router rows;
    ``token_banks`` (one bank per token) given -> only that bank's experts.
    """
    routers = torch.cat([b[2] for b in banks], 0)
    key_rows = torch.cat(list(keys), 0) if keys is not None else routers
    n_old = (len(banks) - 1) * experts_per_task
    outs = []
    for n in range(x.shape[0]):
        xn = x[n]
        z = cosine(xn[None], routers, router_scale)[0]
        allowed = None
        if token_banks is not None:
            allowed = [e // experts_per_task == token_banks[n] for e in range(z.shape[0])]
        elif cascade_tau is not None and len(banks) >= 2:
            zk = cosine(xn[None], key_rows, router_scale)[0]
            b = cascade_bank(zk, experts_per_task, cascade_tau, cascade_gap, router_scale)
            allowed = [e // experts_per_task == b for e in range(z.shape[0])]
        elif tag_tau is not None and len(banks) >= 2:
            new = use_new(z, n_old, tag_tau)
            allowed = [(e >= n_old) == new for e in range(z.shape[0])]
        g = gate_row(z, top_k, temperature, allowed)
        y = weight @ xn + (bias if bias is not None else 0.0)
        e_glob = 0
        for a, b, _ in banks:
            for e in range(experts_per_task):
                sl = slice(e * expert_rank, (e + 1) * expert_rank)
                y = y + scaling * g[e_glob] * (b[:, sl] @ (a[sl] @ xn))
                e_glob += 1
        outs.append(y)
    return torch.stack(outs)


def assert_close(a, b, rtol=1e-6, atol=1e-8, what=""):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    assert torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol), f"{what}: max abs diff {diff}"
    assert not math.isnan(diff)
