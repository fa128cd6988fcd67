"""CPU attention kernels, median microseconds (2 threads), the two constants of `modeling/attention.py`:

1. one sequence (12 heads of 32, as MiniLM-L6; and of 64, as BERT-base) by length: SDPA against plain matmuls and
   softmax (`attention._attend`'s two kernels) -> `MATMUL_ATTENTION_MAX`;
2. 32 ragged sequences (lengths drawn from longest/3 to longest) by the length of the longest: one call per sequence
   (SDPA, and the kernel `_attend` picks) against one padded batched call (`padded_attention`) -> `SHORT_SEQUENCE`.

    python results/short_attention/attention_bench.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

from tokenskim.modeling import attention as A

torch.set_num_threads(2)


def t(f, *a, r=100):
    for _ in range(5):
        f(*a)
    s = []
    for _ in range(r):
        t0 = time.perf_counter()
        f(*a)
        s.append(time.perf_counter() - t0)
    return statistics.median(s) * 1e6


def matmul_attention(q, k, v):
    return torch.matmul(torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).softmax(-1), v)


def per_sequence(kernel, q, k, v, lengths):
    return torch.cat([kernel(A._bhsd(a), A._bhsd(b), A._bhsd(c))[0]
                      for a, b, c in zip(q.split(lengths), k.split(lengths), v.split(lengths))], 1).transpose(0, 1)


with torch.inference_mode():
    print("one sequence: SDPA vs matmul + softmax (us)")
    for d in (32, 64):
        for n in (4, 8, 16, 32, 64, 128, 256, 512):
            q, k, v = (torch.randn(1, 12, n, d) for _ in range(3))
            print(f"  head dim {d:2d}, {n:3d} tokens: SDPA {t(F.scaled_dot_product_attention, q, k, v):7.0f}   "
                  f"matmul {t(matmul_attention, q, k, v):7.0f}", flush=True)
    print("32 ragged sequences: per sequence vs padded (us)")
    for longest in (4, 8, 12, 16, 24, 32, 64):
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(max(1, longest // 3), longest + 1, (32,), generator=g).tolist()
        lengths[0] = longest
        q, k, v = (torch.randn(sum(lengths), 12, 32) for _ in range(3))
        cu = A.lengths_to_cu(torch.tensor(lengths))
        print(f"  longest {longest:3d}: per sequence SDPA {t(per_sequence, F.scaled_dot_product_attention, q, k, v, lengths):7.0f}"
              f"   per sequence _attend {t(per_sequence, A._attend, q, k, v, lengths):7.0f}"
              f"   padded {t(A.padded_attention, q, k, v, cu, lengths):7.0f}", flush=True)
