"""Prompt templates, chat templates and the label-word head (seqcls.prompts, modeling.init_head_from_label_words)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli
from seqcls.data import encode_texts
from seqcls.errors import UsageError
from seqcls.labels import LabelSpace
from seqcls import prompts
from seqcls.prompts import Prompt, encode_with_template, fill

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


def huge_texts() -> tuple[str, str]:
    """A 108 kB Chinese text (the example reviews run together) and a 36 kB English one, longer than twice the cut
    bound of max_length 22 (2 x 4 x 128 x (22 + 11) = 33,792 characters). Their ends meet the templates below as a
    cut end does not: the Chinese one ends in "。", which merges with a following "\n", and both start with a word,
    which merges with a space before it."""
    rng = random.Random(0)
    rows = [json.loads(line)["text"] for line in open(ROOT / "data/example.jsonl", encoding="utf-8")]
    zh = "".join(rng.choice(rows) for _ in range(2_000))[:35_999] + "。"
    words = "the soup was cold and rice fine but driver kind we will order again never slow late hot".split()
    sentences = (" ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))).capitalize() + rng.choice(".!?,")
                 for _ in range(9_000))
    en = " ".join(sentences)[:35_999] + "."
    return zh, en


@pytest.fixture
def tokenized(monkeypatch):
    """Every string the tokenizer is given (the real tokenizer runs)."""
    from transformers import PreTrainedTokenizerBase

    seen: list[str] = []
    original = PreTrainedTokenizerBase.__call__

    def call(self, text=None, *args, **kwargs):
        seen.extend(t for t in (text if isinstance(text, list) else [text]) if isinstance(t, str))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", call)
    return seen


@pytest.fixture(scope="module")
def chat_and_marked(tiny_model_dir, chat_model_dir):
    """The chat tokenizer, and the plain one with a pooling marker (loaded once: 1.5 CPU-s each)."""
    from transformers import AutoTokenizer

    from seqcls.modeling import append_pooling_token

    chat, marked = (AutoTokenizer.from_pretrained(d) for d in (chat_model_dir, tiny_model_dir))
    append_pooling_token(marked, "<|endoftext|>")
    yield chat, marked
    chat.truncation_side = marked.truncation_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_huge_text_in_a_template_is_cut_from_its_ends_to_the_tokens_the_whole_text_gives(
        tokenizer, chat_and_marked, side, tokenized):
    """The template's cut of a huge text reads a few thousand characters at each end of it (never the whole text)
    and keeps the tokens that cutting the whole text keeps (the reference: encode_with_template without `cut`), in
    a single and a pair template, with the chat template and with a pooling marker; the rows whose texts are under
    the cut bound (over max_length or not) are cut whole, as before."""
    plain, (chat, marked) = tokenizer, chat_and_marked
    zh, en = huge_texts()
    medium = zh[:3_000]  # more tokens than max_length, fewer characters than the cut bound
    pair = Prompt("Q: {text} || A: {text_pair}\n")
    cases = [(plain, Prompt(TEMPLATE), [zh, en, medium, "好吃"], None, 17),
             (marked, Prompt("Review: {text}\nSentiment:"), [zh, en, medium], None, 16),
             (chat, Prompt(TEMPLATE, True, "分类评论"), [zh, en], None, 22),  # 19 tokens of template
             (plain, pair, [zh, en, "short one", medium], [en, "好", zh, zh], 17),  # the texts share 17 - 9 tokens:
             (plain, pair, [zh, zh[1:]], [en, zh], 16)]  # an even number and an odd one (the pair takes the odd one)
    for tok, prompt, texts, pairs, max_length in cases:
        tok.truncation_side = side
        whole = encode_with_template(tok, prompt.resolve(tok), texts, pairs, None, max_length)
        tokenized.clear()
        got = encode_texts(tok, texts, pairs, max_length, prompt=prompt)
        assert got["input_ids"] == whole["input_ids"]
        assert not any(huge in seen for huge in (zh, en, zh[1:]) for seen in tokenized)  # never a huge text whole
        assert all(len(ids) <= max_length for ids in got["input_ids"])
    plain.truncation_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_huge_text_whose_cap_splits_a_character_is_capped_later_or_cut_whole(tokenizer, side, tokenized,
                                                                               monkeypatch):
    """" 👁" is two byte tokens: a cap after an odd number of them splits an emoji and does not tokenize back to the
    text's own tokens. The cap moves on by a token; with no further try allowed the row is cut from the whole text
    (the fallback); both keep the tokens the whole text gives."""
    tokenizer.truncation_side = side
    text, max_length = " 👁" * 15_000, 16  # the cap at max_length + 1 tokens splits an emoji
    try:
        whole = encode_with_template(tokenizer, TEMPLATE, [text], None, None, max_length)["input_ids"]
        for tries, reads_whole in ((prompts.CAP_TRIES, False), (0, True)):
            monkeypatch.setattr(prompts, "CAP_TRIES", tries)
            tokenized.clear()
            assert encode_texts(tokenizer, [text], None, max_length, prompt=Prompt(TEMPLATE))["input_ids"] == whole
            assert any(text in seen for seen in tokenized) == reads_whole
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
