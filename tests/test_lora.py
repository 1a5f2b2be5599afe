"""LoRA through PEFT on the tiny model: training (with gradient checkpointing), the adapter directory, reloading
it with the same logits, merging it into a plain model directory with the same logits; QLoRA's CPU error;
target modules per architecture; the fp32 head under fp16."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import MINILM, ROOT, run_cli, run_entry_point, train_args
from seqcls.data import encode_texts

TEST_TEXTS = [json.loads(line)["text"] for line in (ROOT / "data/example_test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """One LoRA training run that also exercises the imbalance options and the pooling token (single-label)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    proc = run_cli(*train_args(tiny_model_dir, out, "--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8",
                               "--lora_dropout", "0.0", "--activation_checkpointing", "true", "--append_eos", "true",
                               "--truncation_side", "left", "--class_weights", "auto", "--focal_gamma", "2",
                               "--label_smoothing_factor", "0.1", "--log_level", "info"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def logits_of(model, tokenizer, seqcls_json, texts):
    """Logits the way training tokenized: the saved tokenizer (it appends the pooling token itself) at the trained
    length, on the trained truncation side."""
    assert tokenizer.truncation_side == seqcls_json["truncation_side"]
    enc = encode_texts(tokenizer, texts, None, seqcls_json["max_seq_length"])
    batch = tokenizer.pad(enc, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float().numpy()


@pytest.mark.slow
def test_lora_run_writes_an_adapter_directory(lora_run):
    out, proc = lora_run
    for name in ("adapter_config.json", "adapter_model.safetensors", "classifier_config.json", "tokenizer.json",
                 "seqcls.json", "predict_results.jsonl", "eval_results.json"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and adapter["r"] == 4 and "score" in adapter["modules_to_save"]
    # default targets: every linear layer of the decoder blocks, named relative to a block
    assert sorted(adapter["target_modules"]) == sorted(
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])
    assert Path(adapter["base_model_name_or_path"]).is_absolute()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert any("score" in k for k in keys)  # the head is saved in full
        # lora_B starts at zero: non-zero after one epoch means gradients flowed through checkpointed blocks
        assert all(f.get_tensor(k).abs().max() > 0 for k in keys if "lora_B" in k)
    assert "trainable parameters" in proc.stdout and "class weights (auto)" in proc.stdout
    saved = json.loads((out / "seqcls.json").read_text())
    assert saved["pooling_token"] == "<|endoftext|>" and saved["truncation_side"] == "left"
    assert json.loads((out / "classifier_config.json").read_text())["pad_token_id"] == 151645


@pytest.mark.slow
def test_adapter_reloads_and_merges_with_the_same_logits(lora_run, tmp_path, capfd):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from seqcls.metrics import softmax
    from seqcls import model_dir

    out, _ = lora_run
    saved = json.loads((out / "seqcls.json").read_text())
    trained = model_dir.load(out)
    adapter_logits = logits_of(trained.model, trained.tokenizer, saved, TEST_TEXTS)
    # the reloaded adapter gives the probabilities the training run wrote
    rows = [json.loads(line) for line in (out / "predict_results.jsonl").read_text().splitlines()]
    names = saved["label_space"]["names"]
    written = np.array([[r["probabilities"][n] for n in names] for r in rows])
    np.testing.assert_allclose(softmax(adapter_logits), written, atol=2e-6)

    # evaluating / predicting with the adapter directory through the training entry point (in-process; the CLI
    # itself is the lora_run above): same predictions, same pooling token
    from seqcls.train import main

    predicted = tmp_path / "predict"
    main(["--model_name_or_path", str(out), "--test_file", str(ROOT / "data/example_test.jsonl"), "--do_predict",
          "--output_dir", str(predicted), "--use_cpu", "true", "--report_to", "none", "--max_seq_length", "64"])
    assert (predicted / "predict_results.jsonl").read_text() == (out / "predict_results.jsonl").read_text()

    merged = tmp_path / "merged"
    proc = run_cli("-m", "seqcls.merge", str(out), str(merged))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (merged / "model.safetensors").is_file() and (merged / "seqcls.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(merged)
    assert type(plain).__name__ == "Qwen2ForSequenceClassification"
    np.testing.assert_allclose(logits_of(plain, AutoTokenizer.from_pretrained(merged), saved, TEST_TEXTS),
                               adapter_logits, atol=1e-5)
    # pipeline: the saved tokenizer appends the pooling token and truncates on the left by itself
    clf = pipeline("text-classification", model=str(merged), top_k=None, function_to_apply="none")
    got = clf([TEST_TEXTS[0]], truncation=True)[0]
    assert {d["label"]: d["score"] for d in got} == pytest.approx(dict(zip(names, adapter_logits[0].tolist())),
                                                                   abs=1e-5)

    # merging into a non-empty directory is refused (nothing overwritten); in-process, the real command ran above
    again = run_entry_point(["-m", "seqcls.merge", str(out), str(merged)], capfd)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_qlora_on_cpu_is_a_clear_error(tiny_model_dir, tmp_path, capfd, monkeypatch):
    # in-process (the CLI's entry point): a subprocess would spend its time importing torch only to fail here
    from seqcls.train import cli

    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    out = tmp_path / "run"
    assert cli(train_args(tiny_model_dir, out, "--use_lora", "true", "--load_in_4bit", "true", test=None)[1:]) == 2
    stderr = capfd.readouterr().err
    assert "load_in_4bit (QLoRA) needs a CUDA GPU" in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_lora_option_mistakes():
    from seqcls.arguments import parse_args
    from seqcls.errors import UsageError

    base = ["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", "o", "--do_train"]
    with pytest.raises(UsageError, match="load_in_4bit needs use_lora true"):
        parse_args(base + ["--load_in_4bit", "true"])
    with pytest.raises(UsageError, match="lora_r must be at least 1"):
        parse_args(base + ["--use_lora", "true", "--lora_r", "0"])
    with pytest.raises(UsageError, match="either append_eos or cls_token"):
        parse_args(base + ["--append_eos", "true", "--cls_token", "<|im_end|>"])
    with pytest.raises(UsageError, match="class_weights must be `auto` or one number per label"):
        parse_args(base + ["--class_weights", "balanced"])
    model_args, _, training_args = parse_args(base + ["--use_lora", "--lora_target_modules", "q_proj", "v_proj",
                                                      "--class_weights", "1", "2.5", "--use_cpu", "true"])
    assert model_args.use_lora and model_args.lora_target_modules == ["q_proj", "v_proj"]
    assert training_args.class_weights == ["1", "2.5"] and training_args.bf16 is False  # CPU: no bf16 default
    assert parse_args(base + ["--use_cpu", "true", "--bf16"])[2].bf16 is True  # a bare --bf16 still means true


def test_qlora_config_and_head_check():
    from transformers import BitsAndBytesConfig

    from seqcls.lora import check_head_unquantized
    from seqcls.modeling import HEAD_NAMES

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                llm_int8_skip_modules=list(HEAD_NAMES))
    assert config.bnb_4bit_quant_type == "nf4" and "score" in config.llm_int8_skip_modules

    class Tiny(torch.nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.score = torch.nn.Linear(4, 2, bias=False, dtype=dtype)

    check_head_unquantized(Tiny(torch.bfloat16), torch.bfloat16)
    with pytest.raises(RuntimeError, match="expected unquantized"):
        check_head_unquantized(Tiny(torch.float32), torch.bfloat16)


@pytest.mark.skipif(not MINILM.is_dir(), reason="the MiniLM test model is not installed")
def test_encoder_targets_the_blocks_and_trains_pooler_and_head_in_full():
    from transformers import AutoModelForSequenceClassification

    from seqcls.lora import lora_target_modules

    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=3)
    targets = lora_target_modules(model, None)
    assert sorted(targets) == sorted(["attention.self.query", "attention.self.key", "attention.self.value",
                                      "attention.output.dense", "intermediate.dense", "output.dense"])
    assert lora_target_modules(model, ["query", "value"]) == ["query", "value"]
    # peft's "all-linear" would also adapt BERT's pooler.dense, which is trained in full: not the same modules
    assert peft_all_linear(model) - targeted(model, targets) == {"bert.pooler.dense"}
    # BERT classifies pooler(CLS): the pooler is trained in full with the classifier
    from types import SimpleNamespace

    from seqcls.lora import apply_lora

    lora = apply_lora(model, SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=None,
                                             model_name_or_path=str(MINILM)))
    full = {n for n, p in lora.named_parameters() if p.requires_grad and "lora_" not in n}
    assert any(".pooler." in n for n in full) and any(".classifier." in n for n in full)



def targeted(model, targets) -> set[str]:
    """The full names of the Linear layers that `targets` (names relative to a block) select."""
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and any(n == t or n.endswith("." + t) for t in targets)}


def peft_all_linear(model) -> set[str]:
    """The modules peft's target_modules="all-linear" selects for a SEQ_CLS model."""
    from peft import LoraConfig, TaskType
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    config = _maybe_include_all_linear_layers(LoraConfig(task_type=TaskType.SEQ_CLS, target_modules="all-linear"), model)
    return targeted(model, config.target_modules)


def test_decoder_default_targets_are_peft_all_linear(tiny_model_dir):
    """For a decoder LLM our default (every Linear of the blocks) is exactly peft's "all-linear"; we keep our own
    selection because for an encoder "all-linear" also takes the pooler (test above)."""
    from transformers import AutoModelForSequenceClassification

    from seqcls.lora import lora_target_modules

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    ours = targeted(model, lora_target_modules(model, None))
    assert ours and ours == peft_all_linear(model)


def test_fp16_keeps_the_head_and_logits_in_fp32(tiny_model_dir, caplog):
    from transformers import AutoModelForSequenceClassification

    from seqcls.modeling import prepare_precision

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).eval()
    model.config.pad_token_id = 151643
    ids = torch.tensor([[9707, 1879]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert model(input_ids=ids).logits.dtype == torch.float16
        with caplog.at_level("WARNING", logger="seqcls.modeling"):
            prepare_precision(model, fp16=True, dtype=torch.float32)
        assert "fp16 with a Qwen model" in caplog.text
        assert model(input_ids=ids).logits.dtype == torch.float32
    assert model.score.weight.dtype == torch.float32


@pytest.mark.parametrize("name", ["qwen2.5-0.5b_lora.yaml", "qwen2.5-7b_qlora.yaml"])
def test_lora_recipes_parse(name):
    from seqcls.arguments import parse_args

    model_args, _, training_args = parse_args([str(ROOT / "configs" / name), "--train_file", "t.jsonl"])
    assert model_args.use_lora and model_args.append_eos
    assert model_args.load_in_4bit == ("qlora" in name)
