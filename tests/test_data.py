"""Data loading and checks: one-line errors with file and line, deterministic validation split, cutting."""
import json
from types import SimpleNamespace

import pytest

from conftest import ROOT
from seqcls.data import Columns, load_raw_datasets, scan_file
from seqcls.errors import UsageError

COLS = Columns(text=["text"])


def data_args(**kw):
    base = dict(dataset_name=None, dataset_config_name=None, train_file=None, validation_file=None, test_file=None,
                text_column_names="text", text_column_delimiter=" ", text_pair_column_name=None,
                label_column_name="label", id_column=None, validation_split_percentage=None, remove_columns=None,
                remove_splits=None)
    base.update(kw)
    return SimpleNamespace(**base)


def jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                 encoding="utf-8")
    return p


@pytest.mark.parametrize("rows, message", [
    ([{"text": "a", "label": "x"}, '{"text": "b", "label": '], r"d.jsonl:2: invalid JSON"),
    ([{"text": "a", "label": "x"}, {"body": "b", "label": "y"}], r"d.jsonl:2: no column 'text'; columns there: body, label"),
    ([{"text": "a"}], r"d.jsonl:1: no label column 'label'; columns there: text"),
    ([{"text": "a", "label": None}], r"d.jsonl:1: the label is null"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": 1}], r"d.jsonl:2: label 1 is a number, but 1 row\(s\) \(first on line 1\) have a str label"),
    ([{"text": 42, "label": "x"}], r"d.jsonl:1: column 'text' holds 42 \(int\), not text"),
    ([], r"d.jsonl: the file is empty"),
])
def test_bad_jsonl_gives_one_line_naming_file_and_line(tmp_path, rows, message):
    path = jsonl(tmp_path, rows)
    with pytest.raises(UsageError, match=message) as info:
        scan_file(str(path), COLS, need_label=True)
    assert "\n" not in str(info.value)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        scan_file(str(tmp_path / "nope.jsonl"), COLS, True)
    p = tmp_path / "latin.jsonl"
    p.write_bytes('{"text": "ok", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n'.encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin.jsonl:2: byte 0xe9 .* not UTF-8"):
        scan_file(str(p), COLS, True)


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    p = tmp_path / "win.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": "x"}\r\n\r\n{"text": "b", "label": "y"}\r\n')
    source = scan_file(str(p), COLS, True)
    assert source.lines == [1, 3]
    raw, _ = load_raw_datasets(data_args(train_file=str(p)))
    assert raw["train"]["text"] == ["a", "b"]


def test_csv_ragged_row(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,a\n\"x, y\",b\nbad,row,here\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"d.csv:4: 3 fields where the header has 2"):
        scan_file(str(p), COLS, True)


def test_csv_loads_with_typed_labels(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,0.5\nworld,2.25\n", encoding="utf-8")
    raw, _ = load_raw_datasets(data_args(train_file=str(p)))
    assert raw["train"]["label"] == [0.5, 2.25]


def test_validation_split_is_stratified_and_deterministic(tmp_path):
    rows = [{"text": f"t{i}", "label": "a" if i % 4 else "b"} for i in range(200)]
    p = jsonl(tmp_path, rows)
    args = data_args(train_file=str(p), validation_split_percentage=10)
    raw1, sources = load_raw_datasets(args, seed=3)
    raw2, _ = load_raw_datasets(args, seed=3)
    assert raw1["validation"]["text"] == raw2["validation"]["text"]
    assert len(raw1["validation"]) == 20 and len(raw1["train"]) == 180
    assert raw1["validation"]["label"].count("b") == 5  # 25% of rows are b, 25% of the held-out rows too
    assert not set(raw1["validation"]["text"]) & set(raw1["train"]["text"])
    # error locations still point at the original file lines after the carve
    first = raw1["validation"]["text"][0]
    assert sources["validation"].where(0) == f"{p}:{int(first[1:]) + 1}"


def test_split_without_a_column_lists_the_columns(tmp_path):
    train = jsonl(tmp_path, [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], "train.jsonl")
    test = jsonl(tmp_path, [{"sentence": "a"}], "test.jsonl")
    with pytest.raises(UsageError, match=r"test.jsonl:1: no column 'text'; columns there: sentence"):
        load_raw_datasets(data_args(train_file=str(train), test_file=str(test)))


def test_files_load_as_written_one_per_split(tmp_path):
    """A CSV's "NA" / "null" are text, not missing values; a column typed differently in two files (one the model
    never reads) no longer stops the load: each file keeps its own types."""
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\nNA,pos\nnull,neg\nNone,NA\n", encoding="utf-8")
    raw, _ = load_raw_datasets(data_args(train_file=str(csv)))
    assert raw["train"]["text"] == ["NA", "null", "None"] and raw["train"]["label"] == ["pos", "neg", "NA"]
    train = jsonl(tmp_path, [{"text": "a", "label": "x", "id": 1}, {"text": "b", "label": "y", "id": 2}], "t.jsonl")
    dev = jsonl(tmp_path, [{"text": "a", "label": "x", "id": "a-1"}], "v.jsonl")
    raw, _ = load_raw_datasets(data_args(train_file=str(train), validation_file=str(dev)))
    assert raw["validation"]["id"] == ["a-1"] and raw["train"]["id"] == [1, 2]


def test_a_full_surrogate_pair_and_an_escaped_backslash_are_text(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a\\ud83d\\ude00", "label": "x"}\n{"text": "b\\\\ud800", "label": "y"}\n', encoding="utf-8")
    raw, _ = load_raw_datasets(data_args(train_file=str(p)))
    assert raw["train"]["text"] == ["a\U0001f600", "b\\ud800"]


def long_texts() -> list[str]:
    """Lines past the cut bound for max_length 4 (6,144 characters): reviews run together (punctuation splits
    pre-tokens), one 8,000-character word (a single Qwen2 pre-token: never cut for Qwen2, cut between its
    characters for WordPiece), letters with combining marks and Hangul jamo (NFC composes them)."""
    import random

    rng = random.Random(0)
    rows = [json.loads(line)["text"] for line in open(ROOT / "data/example.jsonl", encoding="utf-8")]
    joined = "".join(rng.choice(rows) for _ in range(400))
    marks = "".join(chr(rng.choice([0x61, 0x301, 0x308, 0x1100, 0x1161, 0x11A8, 0x20, 0x4E00 + rng.randrange(99)]))
                    for _ in range(8_000))
    return [joined, "好" * 8_000, marks, "short text"]


@pytest.fixture(scope="module")
def qwen2_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("side", ["right", "left"])
def test_cutting_a_huge_text_keeps_every_token_truncation_keeps(qwen2_tokenizer, side):
    from seqcls.data import cut_long_texts, encode_texts

    tokenizer = qwen2_tokenizer
    tokenizer.truncation_side = side
    # + a run of one character of odd length: one Qwen2 word, which BPE pairs from its start, so that a cut of an
    # even number of characters changes the last token on the left (cut at a word boundary only: it stays whole)
    texts = long_texts() + ["好" * 6145]
    assert min(len(t) for t in texts[:3]) > 2 * 4 * 128 * (4 + 2)
    cut = cut_long_texts(tokenizer, texts, 4)
    assert [len(c) < len(t) for c, t in zip(cut, texts)] == [True, False, True, False, False]
    assert all((t.endswith(c) if side == "left" else t.startswith(c)) for c, t in zip(cut, texts))
    whole = tokenizer(texts, truncation=True, max_length=4)["input_ids"]
    assert encode_texts(tokenizer, texts, None, 4)["input_ids"] == whole


def longest_first(first: list[int], second: list[int], budget: int, left: bool) -> list[int]:
    """tokenizers' `truncate_encodings` LongestFirst on two whole token lists (for pairs too costly to tokenize
    together: the tokenizer pairs every overflowing window of one text with every window of the other)."""
    n1, n2 = sorted((len(first), len(second)))
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1, n2 = budget // 2, budget // 2 + budget % 2
    if len(first) > len(second):
        n1, n2 = n2, n1
    if len(first) + len(second) <= budget:
        n1, n2 = len(first), len(second)
    return (first[len(first) - n1:] + second[len(second) - n2:]) if left else (first[:n1] + second[:n2])


def test_pair_keeps_is_the_tokenizers_own_longest_first(qwen2_tokenizer):
    """Every pair of token counts up to 9 against budgets 1 to 6 (odd and even), both truncation sides: the kept
    counts of `pair_keeps` are those the tokenizer keeps (each " x" is one Qwen2 token)."""
    from seqcls.data import pair_keeps

    tokenizer = qwen2_tokenizer
    words = [" ".join(["x"] * n) for n in range(10)]
    for side in ("right", "left"):
        tokenizer.truncation_side = side
        for budget in range(1, 7):
            got = tokenizer([a for a in words for _ in words], [b for _ in words for b in words],
                            truncation="longest_first", max_length=budget)
            kept = [tuple(sum(1 for s in got.sequence_ids(i) if s == j) for j in (0, 1)) for i in range(100)]
            assert kept == [pair_keeps(a, b, budget) for a in range(10) for b in range(10)]


@pytest.mark.parametrize("side", ["right", "left"])
def test_cutting_huge_pairs_keeps_every_token_longest_first_keeps(qwen2_tokenizer, side):
    from seqcls.data import cut_long_pairs, encode_texts

    tokenizer = qwen2_tokenizer
    tokenizer.truncation_side = side
    huge = long_texts()[:3]
    short = ["a b c", "one two three four five six seven eight nine", "好" * 5]
    for max_length in (5, 4):  # an odd and an even budget (the odd token goes to the longer text)
        # one side huge (either one), against the tokenizer itself
        firsts, seconds = huge + short, short + huge
        whole = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)["input_ids"]
        assert encode_texts(tokenizer, firsts, seconds, max_length)["input_ids"] == whole
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in firsts + seconds]
        assert [longest_first(a, b, max_length, side == "left") for a, b in zip(ids[:6], ids[6:])] == whole
    # both sides long: a whole pair would take > 12 GB (every overflowing window of one text is paired with every
    # window of the other), so the rule checked above stands in for the tokenizer, on each text's own tokens; the
    # texts differ in length by a few characters, either one the longer (an odd budget's last token goes to it),
    # and one is a run of rare CJK characters, each several byte-level tokens (a cut inside a character)
    joined, rare = huge[0], "".join(chr(0x20000 + i % 500) for i in range(7000))
    firsts = [joined[:7300], joined[2000:], joined, joined[:7000], rare, rare[1:]]
    seconds = [joined[1000:8600], joined[:7400], joined[500:], joined[1:7000], joined[:7001], rare]
    for max_length in (5, 4, 64, 65):
        cut_firsts, cut_seconds = cut_long_pairs(tokenizer, firsts, seconds, max_length)
        # what the tokenizer gets is a few tokens long: no windows to pair
        assert max(len(tokenizer(c)["input_ids"]) for c in cut_firsts + cut_seconds) <= max_length + 3
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in firsts + seconds]
        assert (encode_texts(tokenizer, firsts, seconds, max_length)["input_ids"]
                == [longest_first(a, b, max_length, side == "left") for a, b in zip(ids[:6], ids[6:])])


def test_cutting_huge_pairs_counts_the_special_tokens_of_the_pair():
    """MiniLM's WordPiece adds [CLS] a [SEP] b [SEP]: max_length 7 and 8 leave budgets of 4 and 5 for the texts."""
    from transformers import AutoTokenizer

    from conftest import MINILM
    from seqcls.data import cut_long_pairs, encode_texts

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    huge, short = long_texts()[:2], ["a b c", "one two three four five six seven eight nine"]
    for side in ("right", "left"):
        tokenizer.truncation_side = side
        for max_length in (7, 8):
            firsts, seconds = huge + short, short + huge
            cut_firsts, cut_seconds = cut_long_pairs(tokenizer, firsts, seconds, max_length)
            assert max(len(c) for c in cut_firsts + cut_seconds) < 50
            whole = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)["input_ids"]
            assert encode_texts(tokenizer, firsts, seconds, max_length)["input_ids"] == whole


def test_select_splits_builds_labels_before_the_cut_and_checks_each_step(tmp_path):
    from seqcls.data import select_splits

    rows = [{"text": f"t{i}", "label": "rare" if i == 9 else "common"} for i in range(10)]
    val = jsonl(tmp_path, [{"text": "v", "label": "rare"}], "val.jsonl")
    raw, sources = load_raw_datasets(data_args(train_file=str(jsonl(tmp_path, rows)), validation_file=str(val)))
    steps = SimpleNamespace(do_train=True, do_eval=True, do_predict=False, tune_thresholds=False)
    cuts = data_args(max_train_samples=3, max_eval_samples=None, max_predict_samples=None,
                     shuffle_train_dataset=False, shuffle_seed=42, problem_type=None, class_names=None,
                     do_regression=None)
    selected, space = select_splits(raw, sources, COLS, cuts, steps)
    assert space.names == ("common", "rare")  # from all 10 rows: the cut to 3 keeps no "rare"
    assert selected["train"]["text"] == ["t0", "t1", "t2"] and len(raw["train"]) == 10  # the input is not changed
    shuffled, _ = select_splits(raw, sources, COLS, SimpleNamespace(**{**vars(cuts), "shuffle_train_dataset": True}), steps)
    assert shuffled["train"]["text"] == raw["train"].shuffle(seed=42)["text"][:3]
    with pytest.raises(UsageError, match="--do_predict needs --test_file"):
        select_splits(raw, sources, COLS, cuts, SimpleNamespace(**{**vars(steps), "do_predict": True}))
