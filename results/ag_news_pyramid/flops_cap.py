"""The most FLOPs LTP can save when layer 0 never prunes: every token through layer 0 and through layer 1's attention,
every other block at the `min_kept_tokens` floor (`modeling/flops.py`, the cost every table uses), on the real token
lengths of the evaluation split.

    python results/ag_news_pyramid/flops_cap.py runs/ag_news_pyramid/dense-e1 ag_news 128 4
"""

import sys

import torch
from transformers import AutoConfig, AutoTokenizer

from tokenskim.modeling.flops import dense_flops, encoder_flops, flops_ratio
from tokenskim.trainers.data import load_task


def main(path: str, task: str, max_length: int, floor: int):
    raw, spec = load_task(task, splits=("validation",))
    rows = raw["validation"]
    tokenizer, config = AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path)
    enc = tokenizer(*[list(rows[c]) for c in spec.text_columns], truncation=True, max_length=max_length)
    lengths = torch.tensor([len(ids) for ids in enc["input_ids"]])
    layers = config.num_hidden_layers
    at_floor = lengths.clamp(max=floor)[:, None].expand(-1, layers).clone()
    attention, ffn = at_floor.clone(), at_floor.clone()
    attention[:, :2] = lengths[:, None]  # layers 0 and 1 attend over every token
    ffn[:, 0] = lengths  # layer 0 prunes nothing after its attention
    cap = flops_ratio(dense_flops(lengths, config), encoder_flops(attention, ffn, config))
    print(f"{len(lengths)} rows, {lengths.float().mean():.1f} tokens on average; with layer 0 never pruning and every "
          f"other block at {floor} tokens the FLOPs ratio is at most {cap:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
