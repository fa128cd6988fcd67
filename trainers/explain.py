"""`tokenskim explain`: which tokens a model drops, and at which layer (as Transkimmer's Table 5).

For each text it runs the model in inference mode (batch of one, hard deterministic decisions, the
exact path `bench` times) and reads, from the model's own output, how many layers' attention and feed-forward
blocks each token went through (`token_layers`, `token_ffn_layers`; every family reports them, planned
decisions and early exits included); `drop_layers`, a pure function, turns them into one "drop layer" per token.
It writes an HTML page and a PNG per text that colour each token by how many layers it went through, and
`explain.json`.

Extractive-QA checkpoints (Transkimmer-QA, Block-Skim) take the question as the text and the context as
`--text-pair`; the prediction is the answer span, and a block Block-Skim skipped shows as its tokens leaving
after the attention of the skim layer.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import asdict, dataclass

import torch

from .errors import UsageError

BEFORE, AFTER = "before_layer", "after_attention"


@dataclass
class TokenDrops:
    """Per token of one sequence: `layer` is the 0-based layer where it left (`num_layers` if it went
    through all of them); `stage` is "before_layer" (skipped layer `layer` entirely), "after_attention"
    (took part in layer `layer`'s attention, not its feed-forward), "exit" (its sequence exited after
    `layer` layers) or "kept"."""

    layer: list
    stage: list


def drop_layers(token_layers, token_ffn_layers, num_layers: int, exit_layer: int | None = None) -> TokenDrops:
    """Per-token drop layers of one sequence from the layers each token went through.

    token_layers, token_ffn_layers: per token, the number of layers whose attention / feed-forward block it
        entered (a model output's `token_layers[b]`, `token_ffn_layers[b]`, real tokens only).
    exit_layer: number of layers the sequence ran, if it exited early.
    """
    attention, ffn = [int(n) for n in token_layers], [int(n) for n in token_ffn_layers]
    if len(attention) != len(ffn):
        raise ValueError(f"{len(attention)} attention counts for {len(ffn)} feed-forward counts")
    exit_layer = num_layers if exit_layer is None else exit_layer
    layer, stage = [], []
    for a, f in zip(attention, ffn):
        if not 0 <= f <= a <= f + 1 or a > num_layers:
            raise ValueError(f"a token cannot enter {a} layers' attention and {f} feed-forward blocks")
        layer.append(f)
        if f == num_layers:
            stage.append("kept")
        elif a == f + 1:
            stage.append(AFTER)
        elif f == exit_layer:
            stage.append("exit")
        else:
            stage.append(BEFORE)
    return TokenDrops(layer, stage)


@dataclass
class Explanation:
    text: str
    text_pair: str | None
    tokens: list
    drop_layer: list
    drop_stage: list
    num_layers: int
    exit_layer: int
    label: str  # the predicted class, or for QA the answer text
    probability: float | None
    kept_token_ratio: float
    flops_ratio: float


def explain_text(model, tokenizer, text, text_pair=None, max_length=None) -> Explanation:
    """Runs one text through a tokenskim model (eval mode) and returns its per-token drop layers."""
    from tokenskim.modeling import flops

    if not (hasattr(model, "skim_model") and hasattr(model.skim_model, "selector")):
        raise ValueError(f"{type(model).__name__} is not a tokenskim model: it drops no tokens")
    model.eval()
    device = next(model.parameters()).device
    qa = "QuestionAnswering" in type(model).__name__
    if qa and text_pair is None:
        raise UsageError("a question-answering model needs a context: give the question as the text and the context "
                         "as --text-pair")
    args = (text, text_pair) if text_pair is not None else (text,)
    enc = tokenizer(*args, truncation="only_second" if qa else True, return_offsets_mapping=qa,
                    max_length=max_length or model.config.max_position_embeddings, return_tensors="pt")
    if qa:  # each context token's character span, to turn the answer's tokens into text
        context_offsets = [tuple(o) if s == 1 else None
                           for o, s in zip(enc.pop("offset_mapping")[0].tolist(), enc.sequence_ids(0))]
    enc = {k: v.to(device) for k, v in enc.items()}
    with torch.inference_mode():
        out = model(**enc)
    n = int(enc["input_ids"].shape[1])
    layers = model.config.num_hidden_layers
    exit_layer = int(out.exit_layer[0]) if getattr(out, "exit_layer", None) is not None else layers
    drops = drop_layers(out.token_layers[0].tolist(), out.token_ffn_layers[0].tolist(), layers, exit_layer)
    lengths = torch.tensor([n])
    dense = flops.dense_flops(lengths, model.config)
    ours = flops.model_macs(model, out.kept_tokens.cpu(), out.ffn_tokens.cpu(),
                            out.exit_layer.cpu() if getattr(out, "exit_layer", None) is not None else None,
                            lengths=lengths)
    if qa:
        label = qa_answer(out.start_logits[0].float().cpu(), out.end_logits[0].float().cpu(), context_offsets, text_pair)
        prob = None
    elif (logits := out.logits[0].float()).numel() > 1:
        probs = torch.softmax(logits, -1)
        k = int(probs.argmax())
        label, prob = str(model.config.id2label.get(k, k)), float(probs[k])
    else:
        label, prob = f"{float(logits):.3f}", None
    return Explanation(
        text=text, text_pair=text_pair, tokens=tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()),
        drop_layer=drops.layer, drop_stage=drops.stage, num_layers=layers, exit_layer=exit_layer, label=label,
        probability=prob, kept_token_ratio=flops.kept_token_ratio(out.kept_tokens.cpu(), lengths),
        flops_ratio=flops.flops_ratio(dense, ours),
    )


def qa_answer(start_logits, end_logits, offsets, context: str) -> str:
    """The best answer span of one window as text ("" when no context position is left to answer from)."""
    from .squad import best_span

    span = best_span(start_logits.numpy(), end_logits.numpy(), offsets)
    return "" if span is None else context[offsets[span[1]][0] : offsets[span[2]][1]]


# ----------------------------------------------------------------------------------------------------
# Rendering


def _colour(layer, num_layers):
    """RGB hex and text colour for a token that went through `layer` of `num_layers` layers."""
    import matplotlib

    rgba = matplotlib.colormaps["YlGnBu"](0.08 + 0.92 * layer / max(num_layers, 1))
    hexc = matplotlib.colors.to_hex(rgba)
    light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55
    return hexc, "#000000" if light else "#ffffff"


def _display(token):
    """(text, glue) where glue says the piece continues the previous word (WordPiece `##`, BPE without `Ġ`)."""
    if token.startswith("##"):
        return token[2:], True
    if token.startswith("Ġ") or token.startswith("▁"):
        return token[1:], False
    return token, False


def _describe(e: Explanation, i):
    layer, stage = e.drop_layer[i], e.drop_stage[i]
    if stage == "kept":
        return f"kept through all {e.num_layers} layers"
    if stage == "exit":
        return f"sequence exited after layer {layer}"
    if stage == AFTER:
        return f"dropped after the attention of layer {layer + 1}"
    return f"dropped before layer {layer + 1} (went through {layer} layers)"


def to_html(explanations, title="tokenskim explain") -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2.2}"
        ".t{padding:2px 3px;border-radius:3px;margin:0 1px}.g{margin-left:-1px}"
        ".legend span{display:inline-block;padding:0 6px;margin:1px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Each token is coloured by the number of layers it went through before the model dropped it "
        "(darker = kept longer). Hover a token for details.</p>",
    ]
    for e in explanations:
        legend = "".join(
            "<span style='background:{};color:{}'>{}</span>".format(*_colour(k, e.num_layers),
                                                                   f"{k} layers" if k < e.num_layers else "all layers")
            for k in range(e.num_layers + 1))
        prob = f" (p = {e.probability:.3f})" if e.probability is not None else ""
        parts.append(f"<h2>prediction: {html.escape(e.label)}{prob}</h2>")
        parts.append(f"<p>kept-token ratio {e.kept_token_ratio:.3f}, FLOPs ratio {e.flops_ratio:.2f}x"
                     + (f", exited after layer {e.exit_layer}" if e.exit_layer < e.num_layers else "") + "</p>")
        parts.append(f"<p class='legend'>{legend}</p><p>")
        for i, tok in enumerate(e.tokens):
            text, glue = _display(tok)
            bg, fg = _colour(e.drop_layer[i], e.num_layers)
            parts.append(f"<span class='t{' g' if glue else ''}' style='background:{bg};color:{fg}' "
                         f"title='{html.escape(_describe(e, i), quote=True)}'>{html.escape(text)}</span>"
                         + ("" if i + 1 < len(e.tokens) and _display(e.tokens[i + 1])[1] else " "))
        parts.append("</p><hr>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_png(e: Explanation, path, width_chars=90):
    """Tokens laid out in lines, each on a box coloured by its drop layer, with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines, line, used = [], [], 0
    for i, tok in enumerate(e.tokens):
        text, _ = _display(tok)
        w = len(text) + 1
        if line and used + w > width_chars:
            lines.append(line)
            line, used = [], 0
        line.append((i, text, used))
        used += w
    if line:
        lines.append(line)
    fig_h = 1.2 + 0.32 * len(lines)
    fig, ax = plt.subplots(figsize=(0.11 * width_chars, fig_h))
    ax.set_xlim(0, width_chars)
    ax.set_ylim(len(lines) + 0.2, -0.8)
    ax.axis("off")
    for row, items in enumerate(lines):
        for i, text, x in items:
            bg, fg = _colour(e.drop_layer[i], e.num_layers)
            ax.text(x, row, text, family="monospace", fontsize=9, color=fg, va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc=bg, ec="none"))
    prob = f" (p = {e.probability:.2f})" if e.probability is not None else ""
    ax.set_title(f"prediction {e.label}{prob}; kept-token ratio {e.kept_token_ratio:.2f}, "
                 f"FLOPs ratio {e.flops_ratio:.2f}x; colour = layers a token went through", fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=matplotlib.colors.ListedColormap(
        [_colour(k, e.num_layers)[0] for k in range(e.num_layers + 1)]),
        norm=matplotlib.colors.Normalize(-0.5, e.num_layers + 0.5))
    cbar = fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.5 / fig_h, pad=0.02, aspect=60,
                        ticks=list(range(e.num_layers + 1)))
    cbar.ax.set_xticklabels([str(k) for k in range(e.num_layers)] + [f"all {e.num_layers}"])
    cbar.set_label("layers a token went through before it was dropped", fontsize=8)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def format_text(e: Explanation) -> str:
    """Plain-text view: token and the layer it left, for the terminal."""
    prob = f" p={e.probability:.3f}" if e.probability is not None else ""
    lines = [f"prediction {e.label}{prob}; kept-token ratio {e.kept_token_ratio:.3f}; FLOPs ratio {e.flops_ratio:.2f}x"]
    for tok, layer, stage in zip(e.tokens, e.drop_layer, e.drop_stage):
        lines.append(f"  {tok:<20} {'all' if stage == 'kept' else layer:>3}  {stage}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="DIR", help="tokenskim checkpoint folder")
    parser.add_argument("text", nargs="+", help="text(s) to explain")
    parser.add_argument("--text-pair", action="append", default=None,
                        help="second segment for pair tasks (one per text)")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", default="explain_out")


def explain(model_dir, texts, text_pairs=None, output_dir="explain_out", device="cpu", max_length=None) -> dict:
    """Loads a checkpoint, explains every text, writes explain.html, explain_<i>.png and explain.json."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    architectures = AutoConfig.from_pretrained(model_dir, trust_remote_code=True).architectures or ()
    qa = any("QuestionAnswering" in name for name in architectures)
    auto = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_dir, trust_remote_code=True).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError("give one --text-pair per text")
    exps = [explain_text(model, tok, t, text_pairs[i] if text_pairs else None, max_length)
            for i, t in enumerate(texts)]
    os.makedirs(output_dir, exist_ok=True)
    files = {"html": os.path.join(output_dir, "explain.html"), "json": os.path.join(output_dir, "explain.json"),
             "png": []}
    with open(files["html"], "w", encoding="utf-8") as fh:
        fh.write(to_html(exps, title=f"tokenskim explain: {os.path.basename(os.path.normpath(model_dir))}"))
    for i, e in enumerate(exps):
        files["png"].append(to_png(e, os.path.join(output_dir, f"explain_{i}.png")))
    with open(files["json"], "w") as fh:
        json.dump({"model": model_dir, "explanations": [asdict(e) for e in exps]}, fh, indent=1)
    return {"explanations": exps, "files": files}


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    res = explain(args.model, args.text, args.text_pair, args.output_dir, args.device, args.max_length)
    for e in res["explanations"]:
        print(format_text(e))
    print(f"wrote {res['files']['html']}, {', '.join(res['files']['png'])}, {res['files']['json']}")
    return 0
