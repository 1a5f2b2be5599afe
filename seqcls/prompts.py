"""Instruction-style inputs: a prompt template around the text, and the tokenizer's chat template.

A `Prompt` (prompt_template, use_chat_template, system_prompt) is resolved against a tokenizer into ONE format
string, the *effective template*: the chat template rendered with the user turn in place (and the generation prompt
added, so the head reads the position where the answer would start), with the prompt template inside the user turn.
Every row is then `effective.format_map(row)`, tokenized whole, so a consumer that only has the tokenizer
(`pipeline`, vLLM) gets the same tokens from the same filled string.

Truncation cuts the text, never the template or the pooling marker: a filled row longer than max_length gets its
{text} (and {text_pair}, longest first) cut, on the tokenizer's truncation side, at a token boundary of the text
alone, then is tokenized whole again (repeated while boundary merges leave it over). This module imports nothing of
ours but errors.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Sequence

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


def encode_with_template(tokenizer, template: str, texts: Sequence[str], pairs: Sequence[str] | None,
                         extra: dict[str, Sequence[Any]] | None, max_length: int, padding: bool | str = False):
    """Tokenize every row as the filled template, cutting only the texts of rows longer than max_length."""
    rows = filled_rows(template, texts, pairs, extra)
    missing = [n for n in Prompt(template).extra_columns() if n not in rows[0]] if rows else []
    if missing:
        raise UsageError(f"prompt_template reads column(s) {missing}, which this input does not give; pass them "
                         "(seqcls-predict reads them from the input file's columns)")
    strings = [fill(template, r) for r in rows]
    lengths = [len(ids) for ids in tokenizer(strings, add_special_tokens=True)["input_ids"]]
    for i, n in enumerate(lengths):
        if n > max_length:
            strings[i] = _cut_row(tokenizer, template, rows[i], n, max_length)
    return tokenizer(strings, truncation=False, padding="max_length" if padding is True else False,
                     max_length=max_length if padding is True else None)


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
