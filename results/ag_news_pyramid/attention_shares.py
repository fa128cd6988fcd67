"""What LTP's log-relative thresholds see in each layer of a dense model: the quantiles of log(n x received
attention) over the tokens of a seeded sample of the evaluation split (received attention averaged over heads and
query rows, n the sequence's tokens), and the share of tokens below log(0.25) and log(0.5).

    python results/ag_news_pyramid/attention_shares.py runs/ag_news_pyramid/dense-e1 ag_news 200 128
"""

import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tokenskim.trainers.data import load_task

QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75)


def main(path: str, task: str, n: int, max_length: int):
    raw, spec = load_task(task, splits=("validation",))
    rows = raw["validation"].shuffle(seed=0).select(range(n))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
    shares = [[] for _ in range(model.config.num_hidden_layers)]
    with torch.no_grad():
        for row in rows:  # one sequence at a time: no padding in the averages
            enc = tokenizer(*[row[c] for c in spec.text_columns], truncation=True, max_length=max_length,
                            return_tensors="pt")
            attentions = model(**enc, output_attentions=True).attentions
            tokens = enc["input_ids"].shape[1]
            for layer, probs in enumerate(attentions):
                shares[layer].append((probs[0].mean(0).mean(0) * tokens).log())  # [tokens]
    print("layer  " + "  ".join(f"q{q:.2f}" for q in QUANTILES) + "  <log(0.25)  <log(0.5)")
    for layer, values in enumerate(shares):
        values = torch.cat(values)
        quantiles = torch.quantile(values, torch.tensor(QUANTILES))
        print(f"{layer:5d}  " + "  ".join(f"{v:5.2f}" for v in quantiles.tolist())
              + f"  {(values < torch.tensor(0.25).log()).float().mean():10.2f}"
              + f"  {(values < torch.tensor(0.5).log()).float().mean():9.2f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
