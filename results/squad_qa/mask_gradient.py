"""Why Transkimmer-QA trained from MiniLM collapsed on 256-token windows (logs/tk.log: gradient norm 2.5e3 -> 2.7e5
while the keep rate fell to 0.02): the training path's masked attention renormalises each query's probabilities over
the kept keys, `p_j m_j / sum_k p_k m_k`, so its gradient with respect to the keep mask grows as the kept probability
mass shrinks. On one 256-token random sequence (12 heads), the largest gradient entry of the mask and its norm, for
`sum(context^2)`, as fewer keys are kept:

    python results/squad_qa/mask_gradient.py
"""

import torch

from tokenskim.modeling.engine import _masked_attention

torch.manual_seed(0)
batch, heads, seq, dim = 1, 12, 256, 32
q, k, v = (torch.randn(batch, heads, seq, dim) * 2 for _ in range(3))
real = torch.ones(batch, seq, dtype=torch.bool)
print("kept keys | max |d/dm| | ||d/dm||")
for kept in (256, 64, 8, 2):
    m = torch.zeros(batch, seq)
    m[:, :kept] = 1.0
    m.requires_grad_(True)
    context, _ = _masked_attention(q, k, v, real, m, 0.0)
    context.pow(2).sum().backward()
    print(f"{kept:>9} | {m.grad.abs().max().item():.3g} | {m.grad.norm().item():.3g}")
