"""How much each exit head of a Magic Pyramid / early-exit model knows: on a seeded sample of the evaluation split,
every head's agreement with the final classifier and the median normalized entropy of its prediction (an exit
happens where that entropy is <= exit_threshold). Exits are turned off while measuring, so every head sees every
example.

    python results/ag_news_pyramid/exit_heads.py runs/ag_news_ft3/mpr-t0.25 ag_news 512
"""

import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tokenskim.modeling.early_exit as early_exit
from tokenskim.trainers.data import load_task


def main(path: str, task: str, n: int, batch_size: int = 32):
    raw, spec = load_task(task, splits=("validation",))
    rows = raw["validation"].shuffle(seed=0).select(range(n))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    seen = {}  # layer -> [(predictions, entropies)]
    decide = early_exit.ExitDecision.__call__

    def record_and_go_on(self, layer_idx, cls, sequence):
        stop, logits = decide(self, layer_idx, cls, sequence)
        seen.setdefault(layer_idx, []).append((logits.argmax(-1), early_exit.normalized_entropy(logits)))
        return torch.zeros_like(stop), logits

    early_exit.ExitDecision.__call__ = record_and_go_on
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = rows[start : start + batch_size]
            enc = tokenizer(*[batch[c] for c in spec.text_columns], truncation=True, max_length=128, padding=True,
                            return_tensors="pt")
            logits = model(**enc).logits
            seen.setdefault("final", []).append((logits.argmax(-1), early_exit.normalized_entropy(logits)))
    final = torch.cat([p for p, _ in seen["final"]])
    for layer, results in seen.items():
        predictions, entropy = torch.cat([p for p, _ in results]), torch.cat([h for _, h in results])
        name = "final classifier" if layer == "final" else f"head after layer {layer}"
        print(f"{name}: agrees with the final classifier on {(predictions == final).float().mean():.3f},"
              f" median normalized entropy {entropy.median():.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
