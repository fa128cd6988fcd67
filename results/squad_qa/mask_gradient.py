"""Why Transkimmer-QA trained from MiniLM collapsed on 256-token windows (logs/tk.log: gradient norm 2.5e3 -> 2.7e5
while the keep rate fell to 0.02): the training path's masked attention renormalises each query's probabilities over
the kept keys, `p_j m_j / sum_k p_k m_k`, so its gradient with respect to the keep mask grows as the kept probability
mass shrinks. On one 256-token random sequence (12 heads), the largest gradient entry of the mask and its norm, for
`sum(context^2)`, as fewer keys are kept: exact (the renormalisation as it was), and bounded as the engine now
computes it (`engine.renormalise_kept`: the gradient of dividing by max(kept mass, KEPT_MASS_FLOOR); same values):

    python results/squad_qa/mask_gradient.py
"""

import torch

from tokenskim.modeling import engine

torch.manual_seed(0)
batch, heads, seq, dim = 1, 12, 256, 32
q, k, v = (torch.randn(batch, heads, seq, dim) * 2 for _ in range(3))
real = torch.ones(batch, seq, dtype=torch.bool)
print("kept keys | exact max |d/dm| | exact ||d/dm|| | bounded max |d/dm| | bounded ||d/dm||")
for kept in (256, 64, 8, 2):
    row = []
    for floor in (1e-9, engine.KEPT_MASS_FLOOR):
        engine.renormalise_kept.__defaults__ = (floor,)
        m = torch.zeros(batch, seq)
        m[:, :kept] = 1.0
        m.requires_grad_(True)
        context, _ = engine._masked_attention(q, k, v, real, m, 0.0)
        context.pow(2).sum().backward()
        row += [m.grad.abs().max().item(), m.grad.norm().item()]
    print(f"{kept:>9} | " + " | ".join(f"{g:.3g}" for g in row))
