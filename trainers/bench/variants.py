"""The models a benchmark compares, all built from one checkpoint folder's weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION

VARIANTS = ("dense", "dense_sorted", "engine_off", "skim")
VARIANT_HELP = {
    "dense": "stock transformers model, sdpa, dynamic padding",
    "dense_sorted": "stock model, batches sorted by length",
    "engine_off": "tokenskim engine, pruning and exits off",
    "skim": "tokenskim model as trained",
}


def is_tokenskim(model) -> bool:
    return hasattr(model, "skim_model") and hasattr(model.skim_model, "selector")


def stock_class_for(config, head=SEQUENCE_CLASSIFICATION):
    """The stock `transformers` class of the task's `head` (sequence classification or extractive QA) with the
    same parameter names, and its config class."""
    from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification, RobertaConfig,
                              RobertaForQuestionAnswering, RobertaForSequenceClassification)

    classes = {
        RobertaConfig: {SEQUENCE_CLASSIFICATION: RobertaForSequenceClassification,
                        QUESTION_ANSWERING: RobertaForQuestionAnswering},
        BertConfig: {SEQUENCE_CLASSIFICATION: BertForSequenceClassification, QUESTION_ANSWERING: BertForQuestionAnswering},
    }
    for config_cls, by_head in classes.items():
        if isinstance(config, config_cls):
            return by_head[head], config_cls
    raise ValueError(f"no stock dense class for config {type(config).__name__}")


def load_dense(model_dir: str, config, dtype=torch.float32, device="cpu", head=SEQUENCE_CLASSIFICATION):
    """Stock dense model on the checkpoint's weights, sdpa attention.

    Returns (model, load_info). Missing keys must be none: the only keys the stock class may leave
    unused are tokenskim's own (selector, exit heads).
    """
    cls, config_cls = stock_class_for(config, head)
    stock_config = config_cls.from_dict({k: v for k, v in config.to_dict().items() if k not in ("auto_map", "model_type")})
    model, info = cls.from_pretrained(model_dir, config=stock_config, attn_implementation="sdpa", dtype=dtype,
                                      output_loading_info=True)
    if info.get("missing_keys"):
        raise RuntimeError(f"stock dense model is missing weights from {model_dir}: {sorted(info['missing_keys'])}")
    return model.to(device).eval(), {k: sorted(v) if isinstance(v, (set, list)) else v for k, v in info.items()
                                     if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def load_variants(model_dir: str, variants=VARIANTS, overrides: Sequence[dict] = (), dtype=torch.float32,
                  device="cpu", head=SEQUENCE_CLASSIFICATION) -> tuple:
    """Builds the requested variants from one checkpoint folder, with the task's `head` (`data.SEQUENCE_CLASSIFICATION`
    or `data.QUESTION_ANSWERING`).

    Returns ({name: model}, info). A plain BERT/RoBERTa checkpoint (not a tokenskim one) gives the dense
    variants only. `overrides`: one skim variant per dict of config values (e.g. thresholds), named
    `skim[key=value]`; without overrides, one `skim` variant as trained.
    """
    from transformers import AutoConfig

    from ..evaluate import AUTO_CLASSES

    auto_class = AUTO_CLASSES[head]
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    models, info = {}, {"model_dir": model_dir, "model_type": config.model_type}
    skim_capable = hasattr(config, "skim_enabled")
    load = dict(trust_remote_code=True, dtype=dtype)
    if "dense" in variants or "dense_sorted" in variants:
        dense, info["dense_load"] = load_dense(model_dir, config, dtype, device, head)
        for name in ("dense", "dense_sorted"):
            if name in variants:
                models[name] = dense  # one instance: the two differ only in batching
    if skim_capable and "engine_off" in variants:
        models["engine_off"] = auto_class.from_pretrained(
            model_dir, skim_enabled=False, **load).to(device).eval()
    if skim_capable and "skim" in variants:
        for ov in overrides or [{}]:
            name = "skim" if not ov else "skim[" + ",".join(f"{k}={v}" for k, v in ov.items()) + "]"
            models[name] = auto_class.from_pretrained(model_dir, **load, **ov).to(device).eval()
    info["family"] = type(models[next(n for n in models if n.startswith("skim"))]).__name__ if any(
        n.startswith("skim") for n in models) else None
    return models, info
