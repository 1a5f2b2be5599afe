"""Prompt templates, chat templates and the label-word head (seqcls.prompts, modeling.init_head_from_label_words)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli
from seqcls.data import encode_texts
from seqcls.errors import UsageError
from seqcls.labels import LabelSpace
from seqcls.prompts import Prompt, fill

TEMPLATE = "评论：{text}\n情感："
# Qwen2's ChatML template as Qwen2-Instruct ships it (the tiny build has none)
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_cuts_the_text_not_the_template_or_the_marker(tiny_model_dir, side):
    from transformers import AutoTokenizer

    from seqcls.modeling import append_pooling_token

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.truncation_side = side
    append_pooling_token(tok, "<|endoftext|>")
    text = "开头很好吃" + "，味道一般" * 40 + "结尾太慢了"
    ids = encode_texts(tok, [text, "好"], None, 24, prompt=Prompt(TEMPLATE))["input_ids"]
    assert len(ids[0]) == 24 and ids[0][-1] == tok.convert_tokens_to_ids("<|endoftext|>")
    decoded = tok.decode(ids[0][:-1])
    assert decoded.startswith("评论：") and decoded.endswith("\n情感：")
    kept = decoded[len("评论："):-len("\n情感：")]
    assert (text.startswith(kept) if side == "right" else text.endswith(kept)) and 0 < len(kept) < len(text)
    # a short row is exactly the tokenizer on the filled template (what pipeline gets when sent it)
    assert ids[1] == tok(fill(TEMPLATE, {"text": "好"}))["input_ids"]


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_cut_inside_a_character_of_two_byte_tokens_still_fits(tokenizer, side):
    """" 👁" is two byte tokens that both span the emoji: a cut between them used to keep the whole emoji, one token
    over, every round, until "could not cut". Now every budget fits, and the kept text is the text's own end."""
    text = "ok 👁👁👁 fine 👁👁"
    tokenizer.truncation_side = side
    try:
        for max_length in range(3, 12):
            ids = encode_texts(tokenizer, [text], None, max_length, prompt=Prompt("Q: {text}!"))["input_ids"][0]
            kept = tokenizer.decode(ids)[len("Q: "):-1]
            assert len(ids) <= max_length and (text.startswith(kept) if side == "right" else text.endswith(kept))
    finally:
        tokenizer.truncation_side = "right"


def test_pair_and_column_placeholders(tokenizer):
    prompt = Prompt("[{topic}] {text} || {text_pair}")
    assert prompt.extra_columns() == ["topic"]
    ids = encode_texts(tokenizer, ["甲" * 60], ["乙" * 10], 30, prompt=prompt, extra={"topic": ["外卖"]})["input_ids"]
    decoded = tokenizer.decode(ids[0])
    assert len(ids[0]) <= 30 and decoded.startswith("[外卖] 甲") and decoded.endswith("乙" * 10)  # longest cut first
    with pytest.raises(UsageError, match="topic"):
        encode_texts(tokenizer, ["a"], ["b"], 30, prompt=prompt)


def test_chat_template_puts_the_text_in_the_user_turn(chat_model_dir, tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    effective = Prompt(TEMPLATE, True, "分类评论").resolve(tok)
    assert effective == ("<|im_start|>system\n分类评论<|im_end|>\n<|im_start|>user\n" + TEMPLATE
                         + "<|im_end|>\n<|im_start|>assistant\n")
    expected = tok.apply_chat_template([{"role": "system", "content": "分类评论"},
                                        {"role": "user", "content": "评论：好吃\n情感："}],
                                       tokenize=False, add_generation_prompt=True)
    assert fill(effective, {"text": "好吃"}) == expected
    with pytest.raises(UsageError, match="no chat template"):
        Prompt(None, True).resolve(tokenizer)


@pytest.mark.parametrize("options, match", [
    (["--prompt_template", "评论：\n情感："], "no {text} placeholder"),
    (["--prompt_template", "{topic}: {text}"], "no column 'topic'"),
    (["--use_chat_template", "true"], "no chat template"),
    (["--system_prompt", "hi"], "use_chat_template is off"),
    (["--head_init", "label_words", "--label_words", "积极=好", "消极=好"], "start with the same token"),
    (["--head_init", "label_words", "--label_words", "nope=好"], "unknown label"),
])
def test_bad_prompt_options_are_one_clear_error_and_write_nothing(tiny_model_dir, tmp_path, options, match):
    from seqcls.train import main

    out = tmp_path / "out"
    with pytest.raises(UsageError, match=match):
        main(["--model_name_or_path", str(tiny_model_dir), "--train_file", str(ROOT / "data/example.jsonl"),
              "--output_dir", str(out), "--do_train", "--use_cpu", "true", "--report_to", "none", *options])
    assert not out.exists()


def test_bad_template_on_the_command_line_exits_2(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(str(ROOT / "run_classification.py"), "--model_name_or_path", str(tiny_model_dir), "--train_file",
                   str(ROOT / "data/example.jsonl"), "--output_dir", str(out), "--do_train", "--use_cpu", "true",
                   "--prompt_template", "no placeholder")
    assert proc.returncode == 2 and "no {text} placeholder" in proc.stderr and not out.exists()
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_label_word_head_gives_the_lm_next_token_logits_at_step_0(chat_model_dir):
    """With the prompt, the classifier's logits before training are the causal LM's next-token logits of the
    label words' first tokens (fp32, within 1e-5)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from seqcls.modeling import init_head_from_label_words

    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    space = LabelSpace("single_label_classification", ("neg", "pos", "zzz"))
    clf = AutoModelForSequenceClassification.from_pretrained(chat_model_dir, num_labels=3, dtype=torch.float32)
    clf.config.pad_token_id = tok.pad_token_id
    ids = init_head_from_label_words(clf, tok, space, ["neg=差", "pos=好吃"], chat_model_dir)  # zzz: its name
    assert ids["pos"] == tok("好吃", add_special_tokens=False)["input_ids"][0]
    lm = AutoModelForCausalLM.from_pretrained(chat_model_dir, dtype=torch.float32)
    prompt = Prompt(TEMPLATE, True)
    enc = encode_texts(tok, ["很好吃", "太慢了，菜也凉了"], None, 64, padding=True, prompt=prompt)
    batch = {k: torch.tensor(v) for k, v in enc.items()}
    with torch.no_grad():
        got = clf(**batch).logits
        lm_logits = lm(**batch).logits
    last = batch["attention_mask"].sum(1) - 1
    want = lm_logits[torch.arange(2), last][:, [ids[n] for n in space.names]]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_label_words_need_a_decoder_lm_head():
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from seqcls.modeling import init_head_from_label_words

    model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8, num_labels=2))
    with pytest.raises(UsageError, match="no language-model head"):
        init_head_from_label_words(model, None, LabelSpace("single_label_classification", ("a", "b")), None, ".")


def test_prompt_is_saved_and_checked(tmp_path):
    from seqcls.model_dir import ModelSettings, read_settings, write_settings

    space = LabelSpace("single_label_classification", ("a", "b"))
    write_settings(tmp_path, ModelSettings(label_space=space, prompt_template=TEMPLATE, use_chat_template=True,
                                           system_prompt="s"))
    assert read_settings(tmp_path).prompt == Prompt(TEMPLATE, True, "s")
    saved = json.loads((tmp_path / "seqcls.json").read_text())
    saved["prompt_template"] = "no text"
    (tmp_path / "seqcls.json").write_text(json.dumps(saved))
    with pytest.raises(UsageError, match="seqcls.json: field 'prompt_template'"):
        read_settings(tmp_path)
