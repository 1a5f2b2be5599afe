"""Instruction-style inputs: a prompt template around the text, and the tokenizer's chat template.

A `Prompt` (prompt_template, use_chat_template, system_prompt) is resolved against a tokenizer into ONE format
string, the *effective template*: the chat template rendered with the user turn in place (and the generation prompt
added, so the head reads the position where the answer would start), with the prompt template inside the user turn.
Every row is then `effective.format_map(row)`, tokenized whole, so a consumer that only has the tokenizer
(`pipeline`, vLLM) gets the same tokens from the same filled string.

Truncation cuts the text, never the template or the pooling marker: a filled row longer than max_length gets its
{text} (and {text_pair}, longest first) cut, on the tokenizer's truncation side, at a token boundary of the text
alone, then is tokenized whole again (repeated while boundary merges leave it over). A huge {text} or {text_pair}
is read only at its ends (`encode_with_template`'s `cut`, `_cut_capped`), so its cost is bounded and its kept tokens
are the same; other columns a template reads ({column}) are never cut. This module imports nothing of ours but
errors.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import UsageError

TEXT, PAIR = "text", "text_pair"
_SENTINEL = "\x00seqcls-user-turn\x00"  # stands for the user turn while the chat template is rendered


@dataclass(frozen=True)
class Prompt:
    """How each text is wrapped before tokenization (all off: the text as it is)."""

    template: str | None = None
    use_chat_template: bool = False
    system_prompt: str | None = None

    @property
    def active(self) -> bool:
        return self.template is not None or self.use_chat_template

    def fields(self) -> list[str]:
        """The placeholder names of the template, in order (checked: named, no format spec or conversion)."""
        if self.template is None:
            return []
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as e:
            raise UsageError(f"prompt_template {self.template!r}: {e}; write literal braces as {{{{ and }}}}") from None
        names = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise UsageError(f"prompt_template: placeholder {{{name}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}} is not a column name; use {{text}}, {{text_pair}} "
                                 "or {column} (literal braces: {{ and }})")
            names.append(name)
        return names

    def extra_columns(self) -> list[str]:
        """Columns the template reads besides the text and the pair text."""
        return list(dict.fromkeys(n for n in self.fields() if n not in (TEXT, PAIR)))

    def check(self, pair_column: str | None) -> None:
        """The options make sense together (no tokenizer or data needed)."""
        if self.system_prompt is not None and not self.use_chat_template:
            raise UsageError("system_prompt is given but use_chat_template is off; set use_chat_template true (the "
                             "system prompt is a turn of the chat template), or put the text into prompt_template")
        fields = self.fields()
        if self.template is not None and TEXT not in fields:
            raise UsageError(f"prompt_template {self.template!r} has no {{text}} placeholder; put {{text}} where the "
                             "text goes, e.g. \"Review: {text}\\nSentiment:\"")
        if self.active and pair_column and PAIR not in fields:
            raise UsageError(f"text_pair_column_name {pair_column!r} is set but prompt_template does not place "
                             "{text_pair}; put {text_pair} into the template (with a prompt, both texts are one input)")
        if PAIR in fields and not pair_column:
            raise UsageError("prompt_template has {text_pair} but no text_pair_column_name is set; name the column "
                             "of the second text with text_pair_column_name")

    def resolve(self, tokenizer) -> str | None:
        """The effective template (a format string over the columns) for this tokenizer; None when inactive."""
        if not self.active:
            return None
        self.fields()
        user = self.template if self.template is not None else "{text}"
        if not self.use_chat_template:
            return user
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError(f"use_chat_template: the tokenizer ({type(tokenizer).__name__}, "
                             f"{getattr(tokenizer, 'name_or_path', '') or 'this model'}) has no chat template; use a "
                             "chat/instruct model, or drop use_chat_template and write the prompt in prompt_template")
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else [])
        messages.append({"role": "user", "content": _SENTINEL})
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # jinja errors of the model's own template, e.g. one that refuses a system turn
            raise UsageError(f"use_chat_template: the tokenizer's chat template cannot render this conversation "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); drop system_prompt, or "
                             "write the prompt in prompt_template") from None
        if rendered.count(_SENTINEL) != 1:
            raise UsageError("use_chat_template: the tokenizer's chat template does not put the user turn verbatim "
                             "into its output; write the prompt in prompt_template instead")
        before, after = rendered.split(_SENTINEL)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and before.startswith(bos) and _adds_bos(tokenizer):
            before = before[len(bos):]  # the tokenizer adds it itself (Llama): not twice
        return _escape(before) + user + _escape(after)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def fill(template: str, values: dict[str, Any]) -> str:
    """The template with every placeholder replaced by its value (None: empty)."""
    return template.format_map({k: "" if v is None else v for k, v in values.items()})


def filled_rows(template: str, texts: Sequence[str], pairs: Sequence[str] | None,
                extra: dict[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(texts):
        row = {TEXT: text}
        if pairs is not None:
            row[PAIR] = pairs[i]
        for name, values in (extra or {}).items():
            row[name] = values[i]
        rows.append(row)
    return rows


# How many tokens past max_length + 1 `_cut_capped` may cap a huge text at when the cap at max_length + 1 does not
# tokenize back to the text's own tokens (a character split over two byte tokens): any cap above max_length gives
# the same cut
CAP_TRIES = 8


def encode_with_template(tokenizer, template: str, texts: Sequence[str], pairs: Sequence[str] | None,
                         extra: dict[str, Sequence[Any]] | None, max_length: int, padding: bool | str = False,
                         cut: Callable[[str, int], str] | None = None):
    """Tokenize every row as the filled template, cutting only the texts of rows longer than max_length.

    `cut(text, n)` (from `seqcls.data`, which owns the bound) returns a prefix of the text (a suffix when the tokenizer
    truncates left) of a few thousand characters whose first (last) n tokens, tokenized alone, are the whole text's,
    or the text itself when it is not that long. A row with such a cut {text} or {text_pair} is cut by `_cut_capped`,
    which reads that prefix and as many characters of the text's other end: bounded time and memory for a text of
    any size, and the tokens the whole text gives. Other rows (and every row without `cut`) are measured and cut
    whole, as before. The template's other columns ({column}) are never cut.
    """
    rows = filled_rows(template, texts, pairs, extra)
    missing = [n for n in Prompt(template).extra_columns() if n not in rows[0]] if rows else []
    if missing:
        raise UsageError(f"prompt_template reads column(s) {missing}, which this input does not give; pass them "
                         "(seqcls-predict reads them from the input file's columns)")
    cap = max_length + 1 + CAP_TRIES
    precut = [{k: cut(r[k], cap) if cut is not None and k in (TEXT, PAIR) and isinstance(r[k], str) else r[k]
               for k in r} for r in rows]
    huge = [any(p[k] is not r[k] for k in (TEXT, PAIR) if k in r) for r, p in zip(rows, precut)]
    strings = ["" if h else fill(template, r) for r, h in zip(rows, huge)]  # a huge row is never filled whole
    short = [i for i in range(len(rows)) if not huge[i]]
    lengths = ([len(ids) for ids in tokenizer([strings[i] for i in short], add_special_tokens=True)["input_ids"]]
               if short else [])  # the tokenizer refuses an empty batch
    for i, n in zip(short, lengths):
        if n > max_length:
            strings[i] = _cut_row(tokenizer, template, rows[i], n, max_length)
    for i in (i for i in range(len(rows)) if huge[i]):
        strings[i] = _cut_capped(tokenizer, template, rows[i], precut[i], max_length)
    return tokenizer(strings, truncation=False, padding="max_length" if padding is True else False,
                     max_length=max_length if padding is True else None)


def _cut_capped(tokenizer, template: str, row: dict[str, Any], precut: dict[str, Any], max_length: int) -> str:
    """`_cut_row` for a row with a huge text, reading only the few thousand characters at each end of that text.

    `_cut_row`'s first round keeps max_length - (row's tokens - texts' own tokens) tokens of the texts, split longest
    first, and cuts each text at a token boundary of the text alone. Here:
    - The counts are capped: each huge text is cut to its first (last, truncating left) c = max_length + 1 tokens
      (c + 1, ... where the cap does not tokenize back to the text's own first c tokens, e.g. a character split over
      two byte tokens). The longest-first split keeps the same number of each text's tokens from counts capped at
      any c above the room the row leaves its texts (at most max_length): a capped text stays longer than that
      room, and when both texts are longer than half of it they split it the same way whichever is longer (ties:
      {text} gives up a token first). The cut is then at the same offsets, and later rounds see the same row.
    - The template's tokens (row's - texts') depend on how each text's ends merge with the template's literals
      (e.g. "。" before "\\n", a space before a word), so they are counted on a stand-in for the whole text: its
      kept end (`precut`) joined to as many characters of its other end; the join's tokens are counted in both the
      row and the text alone, so they cancel. This is the whole text's count where the tokens at its far end are
      decided within those characters, as `seqcls.data._cut_text` assumes (and checks) of the kept end.
    Where the row would fit (at most max_length tokens, only through boundary merges) or no cap up to c + CAP_TRIES
    tokenizes back to the text's own tokens, nothing is guessed: the row is cut from its whole texts (rare, linear).
    """
    left = getattr(tokenizer, "truncation_side", "right") == "left"

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    capped, stand_in = dict(row), dict(row)
    surplus = 0  # tokens the stand-ins have beyond the capped texts
    for k, near in precut.items():
        if k not in (TEXT, PAIR) or near is row[k]:
            continue
        encoded = tokenizer(near, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        for c in range(max_length + 1, min(max_length + 1 + CAP_TRIES, len(ids) - 1) + 1):
            part = near[offsets[-c][0]:] if left else near[:offsets[c - 1][1]]
            if tokenizer(part, add_special_tokens=False)["input_ids"] == (ids[-c:] if left else ids[:c]):
                capped[k] = part
                break
        else:
            return _cut_whole(tokenizer, template, row, max_length)
        # the text is longer than twice `near` (data._cut_text), so the two ends do not overlap
        stand_in[k] = row[k][:len(near)] + near if left else near + row[k][-len(near):]
        surplus += count(stand_in[k]) - c
    # the whole row's length were its huge texts c tokens long: its template tokens counted as the whole texts meet them
    length = len(tokenizer(fill(template, stand_in))["input_ids"]) - surplus
    if length <= max_length:
        return _cut_whole(tokenizer, template, row, max_length)
    return _cut_row(tokenizer, template, capped, length, max_length)


def _cut_whole(tokenizer, template: str, row: dict[str, Any], max_length: int) -> str:
    """The row cut from its whole texts (what every row got before huge texts were capped)."""
    filled = fill(template, row)
    length = len(tokenizer(filled)["input_ids"])
    return filled if length <= max_length else _cut_row(tokenizer, template, row, length, max_length)


def _cut_row(tokenizer, template: str, row: dict[str, Any], length: int, max_length: int) -> str:
    """The filled template with its text(s) cut so that the whole row is at most max_length tokens."""
    side = getattr(tokenizer, "truncation_side", "right")
    cuttable = [k for k in (TEXT, PAIR) if k in row]
    for _ in range(64):  # each round removes at least one token; boundary merges rarely need a second
        excess = length - max_length
        if excess <= 0:
            return fill(template, row)
        encoded = {k: tokenizer(row[k] or "", add_special_tokens=False, return_offsets_mapping=True)
                   for k in cuttable}
        keep = {k: len(encoded[k]["input_ids"]) for k in cuttable}
        if sum(keep.values()) == 0:
            raise UsageError(f"prompt_template: the template alone is {length} tokens, more than max_seq_length "
                             f"{max_length}; shorten the template or raise max_seq_length")
        for _ in range(excess):  # longest first, as the tokenizer's own "longest_first" truncation of pairs
            longest = max(cuttable, key=lambda k: keep[k])
            if keep[longest] == 0:
                break
            keep[longest] -= 1
        row = dict(row)
        for k in cuttable:
            offsets, text = encoded[k]["offset_mapping"], row[k] or ""
            n = keep[k]
            if n == len(offsets):
                continue
            # a character split over two byte tokens (an emoji, a rare CJK character) gives both its span: a cut
            # between them keeps the whole character, i.e. one token more than asked, round after round; so the cut
            # is before (after, truncating left) such a character
            if side == "left":
                first = len(offsets) - n
                row[k] = text[max(offsets[first][0], offsets[first - 1][1]):] if n else ""
            else:
                row[k] = text[:min(offsets[n - 1][1], offsets[n][0])] if n else ""
        length = len(tokenizer(fill(template, row))["input_ids"])
    raise UsageError(f"prompt_template: could not cut a text to fit max_seq_length {max_length}")
