"""Attention of 32 ragged sequences (12 heads of 32, as MiniLM-L6) by length of the longest: one SDPA call per
sequence vs `attention.padded_attention`, median microseconds. Sets `attention.SHORT_SEQUENCE`.

    python results/short_attention/short_attention_bench.py
"""
import time, torch, statistics
from tokenskim.modeling import attention as P
torch.set_num_threads(2)
def t(f, *a, r=200):
    for _ in range(5): f(*a)
    s = []
    for _ in range(r):
        t0 = time.perf_counter(); f(*a); s.append(time.perf_counter() - t0)
    return statistics.median(s) * 1e6
def per_seq(q, k, v, cu, lengths):
    return torch.cat([torch.nn.functional.scaled_dot_product_attention(P._bhsd(a), P._bhsd(b), P._bhsd(c))[0]
                      for a, b, c in zip(q.split(lengths), k.split(lengths), v.split(lengths))], 1).transpose(0, 1)
for longest in [4, 8, 12, 16, 24, 32]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, longest + 1, (32,), generator=g).tolist(); lengths[0] = longest
    q, k, v = (torch.randn(sum(lengths), 12, 32) for _ in range(3))
    cu = P.lengths_to_cu(torch.tensor(lengths))
    print(f"longest {longest:3d}: per-sequence {t(per_seq, q, k, v, cu, lengths):7.0f} us  padded {t(P.padded_attention, q, k, v, cu, lengths):7.0f} us", flush=True)
