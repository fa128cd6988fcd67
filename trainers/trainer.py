"""`SkimTrainer`: the `transformers.Trainer` users know, plus what token skimming needs.

- Training logs the kept-token ratio over real tokens (padding never counts), each layer's keep rate
  and the auxiliary skim loss, summed over every process and micro-batch since the last log.
- Evaluation metrics gain `kept_token_ratio`, `flops_ratio` (dense MACs / model MACs, from
  `tokenskim.modeling.flops`) and the per-layer keep rates. A stock dense model reports 1.0 for both.
- The loss is a per-batch mean for every model here, so it is divided by the gradient-accumulation steps
  and averaged by DDP, never rescaled by token counts (see `__init__`).
- An optional learning rate of its own for the token selector (`selector_learning_rate`), and a warm-up
  of the auxiliary loss (`skim_warmup_steps`: its weight ramps from 0 to the model's over that many steps).
- The training log has the task loss (`task_loss`) and the auxiliary loss (`skim_loss`) apart, so
  `task_loss` compares with `eval_loss`, which never includes the auxiliary term.
- Optional distillation from a dense teacher (`teacher`, `distill_alpha`, `distill_temperature`): the task loss
  term becomes `(1 - alpha) * task + alpha * distillation` (`distillation_loss`), logged apart as `distill_loss`
  (`task_loss` stays the task's own loss).

The model computes its own total loss (task loss + weighted auxiliary loss); the trainer only reads it.
"""

import torch
from transformers import Trainer

from tokenskim.modeling.flops import dense_flops, flops_ratio, kept_token_ratio, model_macs


def selector_of(model):
    """The token selector of a tokenskim model, or None (stock transformers models have none)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return getattr(base, "selector", None)


def selector_parameter_names(model) -> set:
    """Names of the selector's parameters, as `model.named_parameters()` spells them."""
    selector = selector_of(model)
    if selector is None:
        return set()
    ids = {id(p) for p in selector.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def move_to_own_groups(optimizer, params, lr: float):
    """Moves `params` out of the optimizer's groups into copies of those groups with learning rate `lr`.

    Keeps each group's other settings (weight decay). The optimizer must not have stepped yet.
    """
    ids = {id(p) for p in params}
    new_groups = []
    for group in optimizer.param_groups:
        moved = [p for p in group["params"] if id(p) in ids]
        if moved:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            new_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": moved, "lr": lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in new_groups:
        optimizer.add_param_group(group)
    return optimizer


def eval_counts(outputs, attention_mask, num_layers: int) -> tuple:
    """Per-example token counts of one evaluation batch.

    Returns lengths `[batch]` (real tokens), kept `[batch, layers]` and ffn `[batch, layers]`. A model
    without `kept_tokens` (stock transformers) ran every real token through every layer.
    """
    lengths = attention_mask.sum(1)
    kept = outputs.get("kept_tokens")
    if kept is None:
        dense = lengths[:, None].expand(-1, num_layers)
        return lengths, dense, dense
    ffn = outputs.get("ffn_tokens")
    return lengths, kept, (kept if ffn is None else ffn)


TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def distillation_loss(student, teacher, temperature: float = 1.0) -> torch.Tensor:
    """The student's distance to the teacher's predictions, a scalar: for classification logits `[B, C]`,
    KL(teacher || student) of the temperature-softened distributions times T^2 (Hinton et al.); for extractive QA
    `start_logits`/`end_logits` `[B, S]`, the mean of that over the two; for regression (`[B, 1]`), the MSE.

    student, teacher: model outputs (mappings) of the same batch."""
    names = ("start_logits", "end_logits") if student.get("start_logits") is not None else ("logits",)
    losses = []
    for name in names:
        s, t = student[name].float(), teacher[name].float()
        if s.dim() != 2:
            raise ValueError(f"distillation takes [batch, classes] or [batch, positions] logits; got {name} {tuple(s.shape)}")
        if s.shape[-1] == 1:
            losses.append(torch.nn.functional.mse_loss(s, t))
            continue
        # skipped QA positions carry the dtype's minimum: clamp so the log-probabilities stay finite
        s, t = (x.clamp_min(-1e4) / temperature for x in (s, t))
        kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
        losses.append(kl * temperature**2)
    return torch.stack(losses).mean()


def skim_metrics(model, lengths, kept, ffn, exit_layer=None) -> dict:
    """Kept-token ratio, FLOPs ratio (`flops.model_macs`: selector and exit heads included) and per-layer keep rates
    of a whole evaluation set.

    lengths `[n]`, kept/ffn `[n, layers]`, exit_layer `[n]` or None.
    """
    metrics = {
        "kept_token_ratio": kept_token_ratio(kept, lengths),
        "flops_ratio": flops_ratio(dense_flops(lengths, model.config), model_macs(model, kept, ffn, exit_layer, lengths=lengths)),
    }
    per_layer = kept.double().sum(0) / lengths.double().sum()
    metrics.update({f"keep_rate_layer_{i}": float(r) for i, r in enumerate(per_layer)})
    if exit_layer is not None:
        metrics["mean_exit_layer"] = float(exit_layer.double().mean())
    return metrics


class SkimTrainer(Trainer):
    """A `Trainer` for tokenskim models (and the stock dense baseline, for comparison).

    Args:
        selector_learning_rate: learning rate of the token selector's parameters (Transkimmer's
            predictors, LTP's thresholds). None: the same as every other parameter.
        skim_warmup_steps: the auxiliary loss's weight ramps linearly from 0 to the model's
            (`selector.loss_weight`) over this many optimizer steps; 0: full weight from the start.
        teacher: a model with the same head (typically the dense fine-tune the skimming model starts from),
            run without gradients on every training batch; None: no distillation.
        distill_alpha: the distillation loss's share of the task loss (0..1).
        distill_temperature: the softmax temperature of the distillation loss.
        *args, **kwargs: as for `transformers.Trainer`.
    """

    def __init__(self, *args, selector_learning_rate: float | None = None, skim_warmup_steps: int = 0,
                 teacher=None, distill_alpha: float = 0.5, distill_temperature: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.selector_learning_rate = selector_learning_rate
        self.skim_warmup_steps = int(skim_warmup_steps)
        if not 0.0 <= distill_alpha <= 1.0 or distill_temperature <= 0:
            raise ValueError(f"distill_alpha must be in [0, 1] and distill_temperature > 0; got {distill_alpha}, "
                             f"{distill_temperature}")
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False) if teacher is not None else None
        self.distill_alpha = float(distill_alpha)
        self.distill_temperature = float(distill_temperature)
        if selector_learning_rate is not None and not selector_parameter_names(self.model):
            raise ValueError(f"{type(self.model).__name__} has no token selector; drop --selector-learning-rate")
        # Every model here returns a per-batch mean loss. Stock transformers classifiers accept **kwargs, which
        # makes Trainer believe they normalise by `num_items_in_batch`: it would then skip the division by
        # the gradient-accumulation steps and multiply by the number of processes.
        self.model_accepts_loss_kwargs = False
        self._train_sums = None
        self._eval_batches = None

    # ------------------------------------------------------------------------------------------------
    # Optimizer

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.selector_learning_rate is not None:
            names = selector_parameter_names(self.model)
            params = [p for n, p in self.model.named_parameters() if n in names]
            move_to_own_groups(self.optimizer, params, self.selector_learning_rate)
        return optimizer

    # ------------------------------------------------------------------------------------------------
    # Training statistics

    def train(self, *args, **kwargs):
        self._train_sums = None  # nothing left over from an earlier run (or stage) of this trainer
        return super().train(*args, **kwargs)

    def skim_weight_scale(self) -> float:
        """The auxiliary loss's share of its full weight at the current step (the warm-up ramp)."""
        if self.skim_warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.state.global_step + 1) / self.skim_warmup_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        skim = outputs.get("skim_loss") if model.training else None
        task = loss
        weighted = 0.0
        if skim is not None:
            weighted = selector_of(self.model).loss_weight * skim  # the model's loss is task + weighted
            task = loss - weighted
        distill = None
        if self.teacher is not None and model.training:
            with torch.no_grad():
                taught = self.teacher(**{k: inputs[k] for k in TEACHER_INPUTS if k in inputs})
            distill = distillation_loss(outputs, taught, self.distill_temperature)
        objective = task if distill is None else (1 - self.distill_alpha) * task + self.distill_alpha * distill
        loss = objective + self.skim_weight_scale() * weighted
        if model.training and (outputs.get("kept_tokens") is not None or distill is not None):
            self._record_train(outputs, inputs["attention_mask"], task, distill)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _record_train(self, outputs, attention_mask, task_loss, distill=None):
        real = attention_mask.sum().double().view(1)
        kept = outputs.get("kept_tokens")
        # a stock model (a distilled dense student) keeps every real token
        kept = kept.sum(0).double() if kept is not None else real.expand(self.model.config.num_hidden_layers)
        skim = outputs.get("skim_loss")
        zero = kept.new_zeros(1)
        row = torch.cat([
            real,
            torch.ones(1, dtype=torch.float64, device=kept.device),
            skim.detach().double().view(1) if skim is not None else zero,
            task_loss.detach().double().view(1),
            distill.detach().double().view(1) if distill is not None else zero,
            kept,
        ])  # [real tokens, micro-batches, skim loss, task loss, distillation loss, kept per layer]
        self._train_sums = row if self._train_sums is None else self._train_sums + row

    def _train_statistics(self) -> dict:
        """Statistics since the last log, summed over processes. Called on every process in lockstep."""
        sums = self.accelerator.reduce(self._train_sums, reduction="sum")
        self._train_sums = None
        real, batches, skim, task, distill, kept = sums[0], sums[1], sums[2], sums[3], sums[4], sums[5:]
        stats = {
            "kept_token_ratio": float(kept.sum() / (real * len(kept))),
            "skim_loss": float(skim / batches),
            "task_loss": float(task / batches),
        }
        if self.teacher is not None:
            stats["distill_loss"] = float(distill / batches)
        if self.skim_warmup_steps > 0:
            stats["skim_weight_scale"] = self.skim_weight_scale()
        stats.update({f"keep_rate_layer_{i}": float(k / real) for i, k in enumerate(kept)})
        return stats

    def log(self, logs, *args, **kwargs):
        # "loss" marks the periodic training log, which every process reaches at the same step
        if "loss" in logs and self._train_sums is not None:
            logs.update(self._train_statistics())
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # Model card and results: tokenskim's card everywhere (trainers/modelcard.py)

    card_context = None  # what only the command line knows (task, command, training table); set by tokenskim train

    def create_model_card(self, **kwargs):
        """tokenskim's card (model-index with the task metric, kept-token and FLOPs ratios) instead of Trainer's
        generic draft, so `push_to_hub()` uploads it. Keyword arguments as for `Trainer.create_model_card`."""
        if self.is_world_process_zero():
            from .modelcard import write_trainer_card

            write_trainer_card(self, **kwargs)

    def save_model(self, output_dir=None, _internal_call=False):
        """As Trainer's, and a save by the user (not a checkpoint) also writes README.md and, after an evaluation,
        eval_results.json."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call and self.is_world_process_zero():
            from .modelcard import write_trainer_card

            write_trainer_card(self, output_dir)

    # ------------------------------------------------------------------------------------------------
    # Evaluation

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """One evaluation batch: loss, logits and labels as `Trainer` expects, plus the batch's token
        counts (gathered across processes, duplicates of the last batch dropped) for `skim_metrics`.

        Extractive QA models: the logits are `(start_logits, end_logits)` and the labels `(start_positions,
        end_positions)` (Trainer's `label_names` for QA heads)."""
        inputs = self._prepare_inputs(inputs)
        labels = tuple(inputs.get(name) for name in self.label_names)
        labels = None if not labels or any(x is None for x in labels) else labels[0] if len(labels) == 1 else labels
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        num_layers = self.model.config.num_hidden_layers
        counts = eval_counts(outputs, inputs["attention_mask"], num_layers)
        exit_layer = outputs.get("exit_layer")
        if exit_layer is not None:
            counts = (*counts, exit_layer)
        counts = self.accelerator.gather_for_metrics(tuple(c.contiguous() for c in counts))
        if self._eval_batches is not None:
            self._eval_batches.append([c.cpu() for c in counts])
        loss = outputs["loss"].detach().mean() if labels is not None and outputs.get("loss") is not None else None
        if loss is not None and outputs.get("skim_loss") is not None:  # Block-Skim's block loss also at inference
            loss = loss - selector_of(self.model).loss_weight * outputs["skim_loss"].detach()
        if prediction_loss_only:
            return loss, None, None
        if "start_logits" in outputs:
            return loss, (outputs["start_logits"].detach(), outputs["end_logits"].detach()), labels
        return loss, outputs["logits"].detach(), labels

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        self._eval_batches = []
        try:
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            columns = [torch.cat(c) for c in zip(*self._eval_batches)]
        finally:
            self._eval_batches = None
        if columns:
            extra = skim_metrics(self.model, *columns[:3], exit_layer=columns[3] if len(columns) > 3 else None)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in extra.items()})
        return output
