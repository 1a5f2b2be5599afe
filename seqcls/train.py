"""The training recipe: arguments -> data -> label space -> tokenizer + model -> tokenize -> Trainer -> outputs.

`main` reads top to bottom like the script a user would write by hand. The same code runs under
`python run_classification.py ...`, `accelerate launch run_classification.py ...` and `torchrun`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from transformers import DataCollatorWithPadding, Trainer, set_seed

from .arguments import hf_token, parse_args, to_loggable_dict, with_resolved
from .batching import TokenBudgetBatchSampler, plan_training_batches, sorted_by_length, token_lengths
from .calibration import (calibration_metrics, calibration_record, check_fittable, fit_temperatures,
                          fold_temperatures, reliability)
from .cli import run_cli
from .checkpoints import (IDENTITY_FILE, LOCK_FILE, LOSS_TALLY, GracefulStop, Interrupted, RecordIdentity,
                          RestoreLossTally, finished_results, give_weights_umask_mode, loss_tally, output_dir_lock,
                          plan_run, start_training, write_identity)
from .data import Columns, load_raw_datasets, select_splits, tokenize
from .embedding import RowSparseAdamW, clip_grad_norm, plan_embedding_update, replicate_across_processes
from .errors import UsageError
from .labels import MULTI
from .lora import apply_lora, check_head_unquantized, checkpointing_on, quantization_config
from .loss import ClassificationLoss, resolve_class_weights
from .metrics import BEST_METRIC, build_compute_metrics, check_metric_for, classification_metrics, too_many_labels
from .model_dir import (ModelSettings, is_adapter_dir, local_dir, trained_settings, write_adapter_config,
                        write_settings)
from .model_dir import load as load_trained
from .model_dir import save as save_model_dir
from .modeling import (check_model_source, check_vocab_ids, init_head_from_label_words, load_model, load_tokenizer,
                       max_length_for, pooling_token, prepare_model, resolve_dtype, set_sides)
from .outputs import classification_report, decode_logits, write_json, write_jsonl
from .packing import LAST_TOKEN_KEY, PackedForward
from .report import write_evaluation_plots, write_report
from .thresholds import tune_thresholds

logger = logging.getLogger("seqcls")



def setup_logging(training_args) -> None:
    """Our own progress lines at INFO on the main process; transformers and datasets at `log_level`."""
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    ours = logging.INFO if training_args.should_log and training_args.log_level == "passive" else level
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)], level=level)
    logger.setLevel(ours)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_explicit_format()


class ClassificationTrainer(Trainer):
    """Trainer whose evaluation and prediction keep the dataset's order, with our training batch options.

    transformers 5.x evaluates with a random LengthGroupedSampler when `train_sampling_strategy group_by_length`
    is on, so predictions come back shuffled (the official script then scores a 0.82 model as 0.50). We sort eval
    and test rows by length ourselves (the same speed-up) and need them back in exactly that order.
    Training batches may instead come from a token budget (`max_tokens_per_batch`) and be packed (`packing`,
    `train_data_collator`); evaluation always uses the ordinary padding collator.
    """

    def __init__(self, *args, plan_batches=None, sparse_embedding=None, **kwargs):
        super().__init__(*args, **kwargs)
        # plan_batches(model) -> seqcls.batching.BatchPlan, called once the Trainer has put the model on its device
        # (packing is checked on it); self.args becomes a copy that records what was decided (run_args.json)
        plan = plan_batches(self.model) if plan_batches else None
        self.train_data_collator, self.max_tokens_per_batch = (plan.collator, plan.max_tokens) if plan else (None, None)
        if plan is not None:
            self.args = with_resolved(self.args, **plan.options())
        self.sparse_embedding = sparse_embedding  # embedding_update sparse: its weight (seqcls/embedding.py)
        if sparse_embedding is not None:  # under DDP: broadcast, and all-reduced whenever DDP reduces the rest
            replicate_across_processes(
                sparse_embedding, lambda: getattr(self.model_wrapped, "require_backward_grad_sync", True))
        self.loss_tally = RestoreLossTally(self)
        self.add_callback(self.loss_tally)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.sparse_embedding is not None and not isinstance(optimizer, RowSparseAdamW):
            self.optimizer = RowSparseAdamW.from_optimizer(optimizer, self.sparse_embedding)
        return self.optimizer

    def _clip_grad_norm(self, model):
        if self.sparse_embedding is None:
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()
        return clip_grad_norm(model.parameters(), self.args.max_grad_norm)

    def _get_grad_norm(self, model, grad_norm=None):
        if self.sparse_embedding is None or grad_norm is not None:
            return super()._get_grad_norm(model, grad_norm)
        return clip_grad_norm(model.parameters(), float("inf"))

    # --- resume exactly: the loss tally travels with the checkpoint (seqcls.checkpoints.loss_tally) ---
    def _save_checkpoint(self, model, trial):
        self.state.stateful_callbacks[LOSS_TALLY] = loss_tally(self)
        return super()._save_checkpoint(model, trial)

    def _load_callback_state(self):
        self.loss_tally.tally = self.state.stateful_callbacks.pop(LOSS_TALLY, None)
        return super()._load_callback_state()

    def log(self, logs, *args, **kwargs):
        if "train_loss" in logs and self.loss_tally.tally is not None:
            # transformers averages over this process's steps only; the tally covers the whole run
            logs["train_loss"] = self._total_loss_scalar / max(self.state.global_step, 0.001)
        return super().log(logs, *args, **kwargs)

    # --- the Trainer's own JSON files, written whole or not at all (it writes them with open()) ---
    def save_metrics(self, split, metrics, combined=True):
        if not self.is_world_process_zero():
            return
        out = Path(self.args.output_dir)
        write_json(out / f"{split}_results.json", metrics, indent=4, sort_keys=True, ensure_ascii=True)
        if combined:
            everything = finished_results(out)
            everything.update(metrics)
            write_json(out / "all_results.json", everything, indent=4, sort_keys=True, ensure_ascii=True)

    def save_state(self):
        if self.is_world_process_zero():
            import dataclasses

            write_json(Path(self.args.output_dir) / "trainer_state.json", dataclasses.asdict(self.state), indent=2,
                       sort_keys=True, ensure_ascii=True)

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or self.args.world_size > 1:
            return None  # accelerate shards the rows in order; gather_for_metrics drops the padding duplicates
        return torch.utils.data.SequentialSampler(eval_dataset)

    def _get_train_sampler(self, train_dataset=None):
        import datasets
        from transformers.trainer_pt_utils import LengthGroupedSampler

        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(ds, datasets.Dataset):
            # the same sampler as transformers', with lengths read from Arrow instead of row by row in Python
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=token_lengths(ds).tolist())
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        if self.train_data_collator is None and not self.max_tokens_per_batch:
            return super().get_train_dataloader()
        # as Trainer._get_dataloader, with our collator and (under a token budget) our batch sampler; accelerate
        # shards the batches across processes and the Trainer calls the sampler's set_epoch each epoch
        from functools import partial

        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        params: dict[str, Any] = {
            "collate_fn": self.train_data_collator or self.data_collator,
            "num_workers": self.args.dataloader_num_workers,
            "pin_memory": self.args.dataloader_pin_memory,
            "persistent_workers": self.args.dataloader_persistent_workers,
            "worker_init_fn": partial(seed_worker, num_workers=self.args.dataloader_num_workers,
                                      rank=self.args.process_index),
        }
        if self.args.dataloader_num_workers > 0:
            params["prefetch_factor"] = self.args.dataloader_prefetch_factor
        if self.max_tokens_per_batch:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            params["batch_sampler"] = TokenBudgetBatchSampler(
                token_lengths(dataset), self.max_tokens_per_batch, seed=seed,
                packed=self.train_data_collator is not None,
                grouped=self.args.train_sampling_strategy == "group_by_length",
            )
        else:
            params.update(batch_size=self._train_batch_size, sampler=self._get_train_sampler(dataset),
                          drop_last=self.args.dataloader_drop_last)
        return self.accelerator.prepare(DataLoader(dataset, **params))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if LAST_TOKEN_KEY in inputs:  # a packed batch: one logit row per example, gathered at its last token
            inputs = dict(inputs)
            model = PackedForward(model, inputs.pop(LAST_TOKEN_KEY))
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


def predict_in_order(trainer, ds, prefix: str, sort: bool = True):
    """trainer.predict over length-sorted rows (`sort`; else in the given order), with logits and labels returned
    in the dataset's order."""
    sorted_ds, order = sorted_by_length(ds) if sort else (ds, np.arange(len(ds)))
    output = trainer.predict(sorted_ds, metric_key_prefix=prefix)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    logits = np.asarray(logits)[inverse]
    labels = None if output.label_ids is None else np.asarray(output.label_ids)[inverse]
    metrics = output.metrics
    if labels is not None and isinstance(trainer.compute_loss_func, ClassificationLoss):
        # The Trainer averages per-batch mean losses, and under DDP a rank's last batch is padded with repeated rows
        # that gather_for_metrics drops from the logits but not from that batch's mean: recount each row once.
        per_item = trainer.compute_loss_func.per_item(torch.from_numpy(logits), torch.from_numpy(labels))
        metrics[f"{prefix}_loss"] = float(per_item.mean())
    return logits, labels, metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; return all results. Raises UsageError for the user's mistakes."""
    # --- Arguments, seed, logging -------------------------------------------------------------------
    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args)
    with output_dir_lock(training_args):  # one run per output_dir, for the whole run
        return recipe(argv, model_args, data_args, training_args)


def recipe(argv, model_args, data_args, training_args) -> dict[str, Any]:
    """The steps of main, with the output_dir held."""
    set_seed(training_args.seed)
    token = hf_token(model_args)
    logger.info("world size %d, process %d, device %s, bf16 %s, fp16 %s", training_args.world_size,
                training_args.process_index, training_args.device, training_args.bf16, training_args.fp16)
    plan = plan_run(training_args, to_loggable_dict(model_args, data_args, training_args))
    if plan.finished:  # the same command ran to the end already (sweeps rerun every command): nothing to do
        logger.warning("output_dir %s holds this run, finished (%s): nothing to do (--overwrite_output_dir true "
                       "trains it again)", training_args.output_dir, IDENTITY_FILE)
        return finished_results(training_args.output_dir)
    check_model_source(model_args.model_name_or_path, model_args.use_safetensors)
    quantization = quantization_config(model_args, use_cpu=training_args.use_cpu)  # QLoRA: fail fast on a CPU

    # --- Data and label space (from train; a trained model's own when evaluating or predicting with it) -----
    cols = Columns.from_args(data_args)
    with training_args.main_process_first(desc="loading data"):
        raw, sources = load_raw_datasets(
            data_args, cache_dir=model_args.cache_dir, token=token, seed=training_args.seed,
            want_validation=training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no"),
        )
    trained_dir = None if training_args.do_train else local_dir(model_args.model_name_or_path, token)
    settings = None if trained_dir is None else trained_settings(trained_dir, model_args.trust_remote_code,
                                                                 key="model_name_or_path")
    raw, label_space = select_splits(raw, sources, cols, data_args, training_args,
                                     label_space=settings.label_space if settings is not None else None)
    check_label_options(label_space, data_args, training_args, sources, has_validation="validation" in raw)

    # --- Tokenizer and model ------------------------------------------------------------------------------
    dtype = torch.bfloat16 if quantization is not None else resolve_dtype(model_args.torch_dtype, training_args.bf16,
                                                                           training_args.fp16)  # QLoRA: bf16 compute
    model, tokenizer, max_length, marker, cols = load_tokenizer_and_model(
        model_args, data_args, training_args, label_space, settings, trained_dir, cols, dtype, quantization, token)
    prepare_model(model, training_args, dtype)
    if model_args.use_lora and training_args.do_train:
        model = apply_lora(model, model_args, checkpointing_on(training_args))
    sparse_embedding = plan_embedding_update(model, training_args) if training_args.do_train else None

    # --- Tokenize (once: the main process first, the others read its cache) ----------------------------
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize(raw, tokenizer, label_space, cols, max_length, data_args.pad_to_max_length,
                             data_args.preprocessing_num_workers, data_args.overwrite_cache)
    if training_args.calibration == "temperature":  # refused before anything is trained or written
        check_calibration_data(tokenized, label_space, sources, training_args, trained_dir)

    # --- Loss (class weights from train) and the thresholds a trained model was saved with ----------------
    weights = training_args.class_weights if training_args.do_train else None  # evaluation: the plain loss
    loss = ClassificationLoss(label_space.problem_type, resolve_class_weights(
        weights, label_space, tokenized["train"]["labels"] if weights is not None else None),
        training_args.focal_gamma, training_args.label_smoothing_factor)
    trained_thresholds = (settings.thresholds or None) if settings is not None else None
    thresholds = trained_thresholds  # this run's: tuned below (tune_thresholds), else the trained model's

    # --- Trainer --------------------------------------------------------------------------------------
    mixed = training_args.bf16 or training_args.fp16
    stopper = GracefulStop()  # SIGINT/SIGTERM: save a checkpoint at the end of the step, then stop
    eval_dataset = tokenized.get("validation")
    if eval_dataset is not None and training_args.sort_eval_by_length:
        eval_dataset = sorted_by_length(eval_dataset)[0]  # metrics do not depend on the order; padding does
    trainer = ClassificationTrainer(
        model=model,
        args=trainer_arguments(training_args, label_space.problem_type),  # a copy; packing and budget: plan_batches
        train_dataset=tokenized.get("train") if training_args.do_train else None,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed else None),
        compute_metrics=build_compute_metrics(label_space, data_args.metric_name, thresholds=lambda: trained_thresholds),
        compute_loss_func=loss,
        callbacks=[stopper, RecordIdentity(plan.identity)],
        plan_batches=functools.partial(plan_training_batches, tokenizer=tokenizer, train_ds=tokenized["train"],
                                       model_args=model_args, data_args=data_args, training_args=training_args)
        if training_args.do_train else None,
        sparse_embedding=sparse_embedding,
    )
    out = Path(training_args.output_dir)
    results: dict[str, Any] = {}
    calibration = settings.calibration if settings is not None else None
    fitted = None  # the temperatures fitted in this run: eval/test also report the figures before them

    # --- Train, then calibrate and tune thresholds on validation (in that order), then save the settings -----
    if training_args.do_train:
        if trainer.is_world_process_zero():
            start_training(out, plan.identity)
        results.update(train_and_save(trainer, tokenized["train"], plan.resume, stopper))
        if training_args.calibration == "temperature":  # before thresholds: they are tuned on calibrated probabilities
            calibration, fitted = calibrate(trainer, tokenized["validation"], label_space, validation_name(sources))
            trainer.save_model()  # again: the saved weights (a LoRA run: the adapter's head copy) carry the fold
        if training_args.tune_thresholds:
            thresholds = tune(trainer, tokenized["validation"], label_space, data_args.metric_name)
        if training_args.should_save:  # beside the model, wherever the Trainer saved it
            if model_args.use_lora:
                write_adapter_config(trainer.model, out)
            write_settings(out, ModelSettings(
                label_space=label_space, text_column_names=tuple(cols.text), text_column_delimiter=cols.delimiter,
                text_pair_column_name=cols.pair, max_seq_length=max_length, truncation_side=tokenizer.truncation_side,
                padding_side=tokenizer.padding_side, pooling_token=marker, thresholds=thresholds,
                calibration=calibration, prompt_template=cols.prompt.template,
                use_chat_template=cols.prompt.use_chat_template, system_prompt=cols.prompt.system_prompt))
            write_json(out / "run_args.json", to_loggable_dict(model_args, data_args, trainer.args))

    # --- Recalibrate a trained model on new labelled data: a new model directory with the fold --------------
    if training_args.calibration == "temperature" and not training_args.do_train:
        calibration, fitted = calibrate(trainer, tokenized["validation"], label_space, validation_name(sources),
                                        previous=calibration)
        if training_args.should_save:
            merged = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
            save_model_dir(out, merged, tokenizer, dataclasses.replace(settings, calibration=calibration),
                           overwrite=training_args.overwrite_output_dir, carry=(LOCK_FILE, IDENTITY_FILE))
            trainer.model = merged

    # --- Evaluate and predict -------------------------------------------------------------------------
    if training_args.do_eval:
        results.update(evaluate(trainer, tokenized["validation"], label_space, thresholds, fitted))
    if training_args.do_predict:
        results.update(predict(trainer, tokenized["test"], raw["test"], label_space, cols, thresholds, fitted))

    # --- Report: plots and model card (a plot that fails only warns) ----------------------------------
    if training_args.do_train and trainer.is_world_process_zero():
        write_report(out, argv, raw, sources, training_args.world_size, training_args.given_options)
    elif trainer.is_world_process_zero() and (training_args.do_eval or training_args.do_predict):
        write_evaluation_plots(out)  # a trained model measured on labelled data: confusion matrix, reliability
    if training_args.do_train and training_args.should_save:
        give_weights_umask_mode(out)  # trainer.save_model's safetensors come with mode 0600
        write_identity(out, plan.identity, finished=True)  # last: a run killed before this is not finished
    return results


def trainer_arguments(training_args, problem_type: str):
    """The Trainer's TrainingArguments: a copy with the problem type's best-model metric (metrics.BEST_METRIC) when the
    user chose none; the parsed object stays as given (the run identity was taken from it)."""
    if training_args.metric_for_best_model_given:
        return training_args
    metric, greater = BEST_METRIC[problem_type]
    return with_resolved(training_args, metric_for_best_model=metric, greater_is_better=greater)


def check_label_options(label_space, data_args, training_args, sources, has_validation: bool) -> None:
    """The options that depend on the label space, checked before the model loads."""
    logger.info("label space: %s, %d label(s) %s", label_space.problem_type, label_space.num_labels,
                list(label_space.names)[:20])
    check_metric_for(label_space, data_args.metric_name)
    if training_args.tune_thresholds and label_space.problem_type != MULTI:
        raise UsageError(f"tune_thresholds applies to multi-label data; this is {label_space.problem_type}")
    if training_args.calibration == "temperature":  # the cheap checks before the model loads; rows after tokenizing
        check_fittable(label_space, "present" if has_validation else "missing", validation_name(sources))


def load_tokenizer_and_model(model_args, data_args, training_args, label_space, settings, trained_dir, cols, dtype,
                             quantization, token):
    """A new model (head sized for the label space) with its tokenizer, or a trained model directory exactly as
    trained (seqcls.model_dir; its prompt replaces the options'). Returns (model, tokenizer, max_length, pooling
    marker, columns), checked: the vocabulary covers the tokenizer, the chat template exists, a QLoRA head is plain."""
    if settings is None:
        if is_adapter_dir(model_args.model_name_or_path):
            raise UsageError(f"{model_args.model_name_or_path} is a LoRA adapter directory: merge it first "
                             "(seqcls-merge ADAPTER_DIR OUT_DIR) and train from the merged model")
        tokenizer = load_tokenizer(model_args, token)
        marker = pooling_token(model_args, tokenizer)
        model = load_model(model_args, label_space, tokenizer, dtype=dtype, token=token,
                           quantization_config=quantization,
                           device_map={"": training_args.device} if quantization is not None else None)
        max_length = max_length_for(tokenizer, model, data_args.max_seq_length)
        tokenizer.model_max_length = max_length  # saved with the model: every consumer truncates where training did
    else:
        trained = load_trained(trained_dir, dtype=dtype, token=token,
                               attn_implementation=model_args.attn_implementation,
                               trust_remote_code=model_args.trust_remote_code,
                               max_length=data_args.max_seq_length, use_safetensors=model_args.use_safetensors,
                               key="model_name_or_path", merge_adapter=False)  # the training run's exact logits
        model, tokenizer, max_length = trained.model, trained.tokenizer, trained.max_length
        marker = settings.pooling_token
        check_same_input(model_args, settings, tokenizer)
        if cols.prompt.active and cols.prompt != settings.prompt:
            raise UsageError("the model was trained with another prompt (seqcls.json prompt_template / "
                             "use_chat_template / system_prompt); drop these options, they are applied from the "
                             "model directory")
        cols = dataclasses.replace(cols, prompt=settings.prompt)
    check_vocab_ids(model, tokenizer, marker)
    cols.prompt.resolve(tokenizer)  # a chat template the tokenizer does not have: refused before any work
    if model_args.head_init == "label_words":
        if settings is not None:
            raise UsageError("head_init label_words starts a new head; the model is already trained: drop it")
        init_head_from_label_words(model, tokenizer, label_space, model_args.label_words,
                                   local_dir(model_args.model_name_or_path, token))
    if quantization is not None:
        check_head_unquantized(model, dtype)
    logger.info("model %s: %.1fM parameters, dtype %s, attention %s, max length %d, padding side %s, truncation "
                "side %s, pooling token %r", model.config.model_type, sum(p.numel() for p in model.parameters()) / 1e6,
                dtype, model_args.attn_implementation, max_length, tokenizer.padding_side, tokenizer.truncation_side,
                marker)
    return model, tokenizer, max_length, marker, cols


def check_calibration_data(tokenized, label_space, sources, training_args, trained_dir) -> None:
    """calibration temperature: validation rows it can be fitted on, and (recalibrating) a new output_dir."""
    if "validation" not in tokenized:
        raise UsageError("calibration temperature needs validation data: give --validation_file or "
                         "--validation_split_percentage (and --do_eval when recalibrating a trained model)")
    validation = tokenized["validation"]
    check_fittable(label_space, validation["labels"] if "labels" in validation.column_names else None,
                   validation_name(sources))
    if not training_args.do_train and Path(training_args.output_dir).resolve() == trained_dir.resolve():
        raise UsageError("calibration of a trained model writes a new model directory: give an --output_dir "
                         f"other than {trained_dir}")


def train_and_save(trainer, train_dataset, resume: str | None, stopper: GracefulStop) -> dict[str, Any]:
    """Train (from `resume`, a checkpoint), save the model, the train metrics and the Trainer's state."""
    train_result = trainer.train(resume_from_checkpoint=resume)
    stopper.raise_if_stopped(trainer.args.output_dir)  # SIGINT/SIGTERM: a checkpoint is saved, nothing else
    trainer.save_model()
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(train_dataset)
    metrics["trainable_parameters"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics["world_size"] = trainer.args.world_size
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def tune(trainer, validation, label_space, metric_name: str | None) -> tuple[float, ...]:
    """Multi-label thresholds tuned on the validation rows; the Trainer's metrics use them from here on."""
    logits, labels, _ = predict_in_order(trainer, validation, "tune")
    thresholds = tuple(float(t) for t in tune_thresholds(expit(logits), labels))
    logger.info("thresholds tuned on validation: %s", dict(zip(label_space.names, thresholds)))
    warning = too_many_labels(classification_metrics(label_space, logits, labels, thresholds))
    if warning:
        logger.warning("tune_thresholds: %s", warning)
    trainer.compute_metrics = build_compute_metrics(label_space, metric_name, thresholds=lambda: thresholds)
    return thresholds


def evaluate(trainer, validation, label_space, thresholds, fitted) -> dict[str, Any]:
    """Metrics on the validation rows (with the calibration figures before this run's temperatures), and
    eval_report.json."""
    logits, labels, metrics = predict_in_order(trainer, validation, "eval", sort=trainer.args.sort_eval_by_length)
    metrics["eval_samples"] = len(validation)
    metrics.update(before_calibration("eval", label_space, logits, labels, fitted))
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        write_json(Path(trainer.args.output_dir) / "eval_report.json",
                   classification_report(label_space, logits, labels, thresholds)
                   | reliability(label_space, logits, labels, fitted))
    return metrics


def predict(trainer, test, raw_test, label_space, cols, thresholds, fitted) -> dict[str, Any]:
    """predict_results.jsonl for the test rows; with labels, test metrics and test_report.json too."""
    out = Path(trainer.args.output_dir)
    logits, labels, metrics = predict_in_order(trainer, test, "test", sort=trainer.args.sort_eval_by_length)
    results: dict[str, Any] = {}
    if labels is not None and cols.label in raw_test.column_names:
        metrics.update({f"test_{k}": v for k, v in
                        classification_metrics(label_space, logits, labels, thresholds).items()})
        metrics.update(before_calibration("test", label_space, logits, labels, fitted))
        metrics["test_samples"] = len(test)
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        results = metrics
    if trainer.is_world_process_zero():
        ids = raw_test[cols.id] if cols.id and cols.id in raw_test.column_names else range(len(test))
        rows = ({"id": i, **row} for i, row in zip(ids, decode_logits(label_space, logits, thresholds)))
        write_jsonl(out / "predict_results.jsonl", rows)
        if labels is not None:
            write_json(out / "test_report.json", classification_report(label_space, logits, labels, thresholds)
                       | reliability(label_space, logits, labels, fitted))
        logger.info("predictions: %s (%d rows)", out / "predict_results.jsonl", len(test))
    return results


def validation_name(sources) -> str:
    source = sources.get("validation")
    return source.name if source is not None else "the validation split"


def calibrate(trainer, validation, label_space, fitted_on: str,
              previous: dict | None = None) -> tuple[dict, list[float]]:
    """Fit temperature(s) on the validation logits and fold them into trainer.model's head (in place); the record
    for seqcls.json and this fit's temperatures. Recalibrating an already calibrated model multiplies the
    temperatures, so the record keeps the total relative to the trained logits."""
    logits, labels, _ = predict_in_order(trainer, validation, "calibration")
    temps = fit_temperatures(label_space, logits, labels)
    fold_temperatures(trainer.model, temps, label_space.num_labels)
    record = calibration_record(label_space, logits, labels, temps, fitted_on)
    if previous is not None:
        record["temperatures"] = [round(a * b, 6) for a, b in
                                  zip(np.broadcast_to(previous["temperatures"], len(temps)), temps)]
    logger.info("calibration: temperature(s) %s fitted on %s (%d rows); %s -> %s", temps[:10], fitted_on,
                len(labels), record["before"], record["after"])
    return record, temps


def before_calibration(prefix: str, label_space, logits, labels, temperatures) -> dict[str, float]:
    """The calibration metrics of the logits before this run's temperatures (logits * T), beside the after ones."""
    if temperatures is None or labels is None:
        return {}
    raw = np.asarray(logits, dtype=np.float64) * np.asarray(temperatures, dtype=np.float64)
    return {f"{prefix}_{k}_before_calibration": v for k, v in calibration_metrics(label_space, raw, labels).items()}


def check_same_input(model_args, settings: ModelSettings, tokenizer) -> None:
    """Evaluating a trained model: a pooling option on the command line must be the one it was trained with (another
    marker would change what the model sees); truncation and padding sides may be chosen anew."""
    asked = model_args.cls_token or (tokenizer.eos_token if model_args.append_eos else None)
    if asked is not None and asked != settings.pooling_token:
        trained = repr(settings.pooling_token) if settings.pooling_token else "no pooling token"
        raise UsageError(f"the model in {model_args.model_name_or_path} was trained with {trained} ({settings.source}: "
                         f"pooling_token); drop append_eos / cls_token, it is applied from the model directory")
    if model_args.truncation_side and model_args.truncation_side != settings.truncation_side:
        logger.warning("truncation_side %s instead of the trained %s", model_args.truncation_side,
                       settings.truncation_side)
    set_sides(tokenizer, model_args.padding_side or tokenizer.padding_side,
              model_args.truncation_side or tokenizer.truncation_side)


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `seqcls-train` (seqcls.cli: one line and exit 2 for a usage error, --debug for the
    traceback; a run stopped by SIGINT/SIGTERM after saving a checkpoint exits 128 + the signal number)."""
    return run_cli(main, argv, stops=(Interrupted,))


if __name__ == "__main__":
    sys.exit(cli())
