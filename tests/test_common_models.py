"""transformers' own common model tests (`ModelTesterMixin`, vendored in hf_modeling_common.py) for every tokenskim
class, in two modes: decisions off (`skim_enabled=False`) and on (settings under which the tiny random models
drop tokens and exit sequences).

The sdist of transformers has no BERT/RoBERTa model testers (tests/models is not shipped), so `Tester` below is
tokenskim's: tiny configs, one fixed batch with right padding and a question segment. Tests that cannot apply are skipped with their reason
(`SKIPPED`); everything else runs as transformers runs it for its own models.
"""

import unittest

import pytest
import torch
import transformers
from conftest import PAD, tiny_config

import tokenskim.modeling as tsm

pytest.importorskip("parameterized", reason="transformers' common tests need `parameterized` (pip install '.[test]')")

# hf_modeling_common.py is one release's test file and imports that release's testing internals, which change between
# releases; `.[test]` pins this version, and elsewhere (another installed transformers) the module is skipped.
VENDORED_FROM = "5.25.0"
if transformers.__version__ != VENDORED_FROM:
    pytest.skip(f"hf_modeling_common.py is transformers {VENDORED_FROM}'s common test file; installed: "
                f"{transformers.__version__} (pip install '.[test]' installs {VENDORED_FROM})", allow_module_level=True)

from hf_modeling_common import ModelTesterMixin  # noqa: E402

FAMILIES = {  # class name prefix -> (its heads, settings under which a tiny random model decides)
    "Transkimmer": (("Model", "ForSequenceClassification", "ForQuestionAnswering", "ForTokenClassification"),
                    {"skim_bias_init": 0.0}),
    "LTP": (("Model", "ForSequenceClassification", "ForQuestionAnswering", "ForTokenClassification"),
            {"final_threshold": 0.3}),
    "EarlyExit": (("Model", "ForSequenceClassification"), {"exit_threshold": 0.8}),
    "MagicPyramid": (("Model", "ForSequenceClassification"), {"final_threshold": 0.3, "exit_threshold": 0.8}),
    "STTABT": (("Model", "ForSequenceClassification"), {"keep_logit_init": -2.0}),
    "BlockSkim": (("Model", "ForQuestionAnswering"), {"skim_threshold": 0.99}),  # skips every unprotected block
}
BACKBONES = {"Bert": "bert", "Roberta": "roberta"}

SKIPPED = {
    "test_attention_outputs": "tokenskim models do not return per-layer attentions (documented; a ValueError)",
    "test_hidden_states_output": "tokenskim models do not return per-layer hidden states (documented; a ValueError)",
    "test_retain_grad_hidden_states_attentions": "needs per-layer hidden states and attentions",
    "test_model_outputs_equivalence": "compares outputs with output_hidden_states/output_attentions=True",
    # tokenskim's training loop runs each BertLayer's parts itself (its attention weights the keys by the keep mask)
    # and checkpoints them (SkimEncoder.run_layer_part); these tests hook BertLayer.forward, which it never calls.
    # test_transformers_compat.py checks that checkpointing gives the same gradients, reentrant or not.
    "test_training_gradient_checkpointing": "hooks BertLayer.forward, which tokenskim's engine does not call",
    "test_training_gradient_checkpointing_use_reentrant_false": "hooks BertLayer.forward (see above)",
    "test_training_gradient_checkpointing_use_reentrant_true": "hooks BertLayer.forward (see above)",
}


class Tester:
    """transformers' model-tester interface for one tokenskim config class: 2 layers, hidden 32, batch 3 x 7 with
    one right-padded row."""

    __test__ = False  # not a pytest test class

    batch_size, seq_length, num_hidden_layers, num_attention_heads, hidden_size = 3, 7, 2, 4, 32
    vocab_size, is_training, num_labels = 120, True, 2

    def __init__(self, parent, config_class, backbone, settings):
        self.parent, self.config_class, self.backbone, self.settings = parent, config_class, backbone, settings

    def get_config(self):
        base = tiny_config(self.backbone, num_labels=self.num_labels, num_hidden_layers=self.num_hidden_layers,
                           initializer_range=0.3)
        return self.config_class(**base.to_dict(), **self.settings)

    def prepare_config_and_inputs_for_common(self):
        """input_ids / attention_mask `[3, 7]`, row 1 right-padded after 5 tokens. The first 3 tokens are a question
        segment (BERT: token_type_ids; RoBERTa: `</s></s>` at 1-2), which Block-Skim never skips."""
        generator = torch.Generator().manual_seed(0)  # the same batch in every test, so "on" decides the same way
        ids = torch.randint(5, self.vocab_size, (self.batch_size, self.seq_length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0
        ids[1, 5:] = PAD[self.backbone]
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.backbone == "roberta":
            ids[:, 1:3] = 2  # eos_token_id of the tiny RoBERTa config
        else:
            inputs["token_type_ids"] = (torch.arange(self.seq_length) >= 3).long().expand_as(ids) * mask
        return self.get_config(), inputs


class TokenskimModelTest(ModelTesterMixin):
    """The common tests for one family, backbone and mode; subclasses set the class attributes."""

    family = backbone = mode = None
    all_model_classes = ()
    pipeline_model_mapping = {}
    test_resize_embeddings = True

    def setUp(self):
        heads, deciding = FAMILIES[self.family]
        settings = dict(deciding) if self.mode == "on" else {"skim_enabled": False}
        if self.family == "BlockSkim":
            settings["block_size"] = 4
        config_class = self.all_model_classes[0].config_class
        self.model_tester = Tester(self, config_class, BACKBONES[self.backbone], settings)

    def test_tokenskim_decisions_follow_the_mode(self):
        """Mode "on" drops tokens or exits sequences on the tester's batch; mode "off" keeps everything."""
        torch.manual_seed(0)
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = self.all_model_classes[1](config).eval()  # the first head
        with torch.no_grad():
            out = model(**inputs)
        dropped = out.ffn_tokens[:, -1] < inputs["attention_mask"].sum(1)
        self.assertEqual(bool(dropped.any()), self.mode == "on")

    def test_training(self):
        # transformers leaves its base models (no loss) out by name, through MODEL_MAPPING_NAMES; so do we
        self.all_model_classes = tuple(c for c in self.all_model_classes if not c.__name__.endswith("Model"))
        super().test_training()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """transformers picks labels from its own Auto mappings, which do not list tokenskim's classes."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            batch, seq = self.model_tester.batch_size, self.model_tester.seq_length
            name = model_class.__name__
            if name.endswith("ForQuestionAnswering"):
                inputs_dict["start_positions"] = torch.zeros(batch, dtype=torch.long)
                inputs_dict["end_positions"] = torch.zeros(batch, dtype=torch.long)
            elif name.endswith("ForSequenceClassification"):
                inputs_dict["labels"] = torch.zeros(batch, dtype=torch.long)
            elif name.endswith("ForTokenClassification"):
                inputs_dict["labels"] = torch.zeros(batch, seq, dtype=torch.long)
        return inputs_dict


def _skip(reason):
    def test(self):
        self.skipTest(reason)

    return test


for _name, _reason in SKIPPED.items():
    setattr(TokenskimModelTest, _name, _skip(_reason))

for _family, (_heads, _) in FAMILIES.items():
    for _prefix, _backbone in BACKBONES.items():
        for _mode in ("off", "on"):
            _classes = tuple(getattr(tsm, f"{_family}{_prefix}{head}") for head in _heads)
            _test_name = f"Test{_family}{_prefix}Decisions{_mode.capitalize()}"
            globals()[_test_name] = type(_test_name, (TokenskimModelTest, unittest.TestCase), {
                "family": _family, "backbone": _prefix, "mode": _mode, "all_model_classes": _classes,
            })
