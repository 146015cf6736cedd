"""Decoding for the ``sllm`` family: constrained greedy generation, a tolerant parser for free
output, and long-text chunking.

The model writes the input sentence back with inline markup (``<이순신:PS> 장군은 …``, escaped as
:func:`kner.align.to_markup` escapes it). Constrained decoding runs an automaton over the *bytes*
of that markup: at each step only tokens whose whole byte string continues a well-formed markup
of exactly this input are allowed, so every output parses into spans over the original text.
Bytes rather than characters, because byte-level BPE (Qwen, GPT-2) and byte-fallback
SentencePiece (Gemma, Llama) tokens may hold part of a UTF-8 character; with bytes, an emoji or
a control character the vocabulary lacks is still written, one byte token at a time.
"""
from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Sequence

import torch

from ..align import MarkupError, parse_markup, trim
from ..types import LABELS, Span

_ESCAPED = {"\\": b"\\\\", "<": b"\\<", ">": b"\\>"}


# --- token ids -> the bytes they write ------------------------------------------------------

def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: ByteLevel BPE writes byte b as a printable char."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _decoder_types(node) -> set[str]:
    if isinstance(node, dict):
        return ({node["type"]} if "type" in node else set()) | {t for v in node.values() for t in _decoder_types(v)}
    if isinstance(node, list):
        return {t for v in node for t in _decoder_types(v)}
    return set()


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id adds to the output; ``None`` for special tokens (never generated).

    Read from the token strings and the tokenizer's decoder (ByteLevel, or ``▁`` spaces with
    ``<0xNN>`` byte fallback), then checked on a probe text, because decoding ids one at a
    time with ``tokenizer.decode`` loses partial UTF-8 characters and leading spaces."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; sllm needs a tokenizer.json")
    types = _decoder_types(json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder"))
    special = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special} | set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_level = "ByteLevel" in types
    table = _byte_decoder()
    fallback = re.compile(r"<0x([0-9A-Fa-f]{2})>")
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif byte_level and all(c in table for c in piece):
            out.append(bytes(table[c] for c in piece))
        elif "ByteFallback" in types and fallback.fullmatch(piece):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("▁", " ").encode("utf-8"))
    probe = "이순신 <장군:PS> a\\b 😀 漢字\t\x01 5㎞"
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    written = b"".join(out[i] or b"" for i in ids)
    if written not in (probe.encode(), b" " + probe.encode()):  # SentencePiece may prefix a space
        raise ValueError(f"cannot read this tokenizer's tokens as bytes ({sorted(types)} decoder): {probe!r} came back "
                         f"as {written!r}; sllm needs a byte-level BPE or byte-fallback SentencePiece tokenizer")
    missing = set(range(256)) - {b[0] for b in out if b is not None and len(b) == 1}
    if missing:
        raise ValueError(f"the tokenizer has no single-byte token for {len(missing)} byte values (e.g. {min(missing):#04x}), "
                         "so constrained decoding could not write every text; use a byte-level or byte-fallback tokenizer")
    return out


class TokenTable:
    """Token byte strings, indexed for the automaton: ids by bytes, and every token prefix."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.bytes = tokenizer, token_bytes(tokenizer)
        self.ids_of: dict[bytes, list[int]] = {}
        self.prefixes: set[bytes] = set()
        for i, b in enumerate(self.bytes):
            if b:
                self.ids_of.setdefault(b, []).append(i)
                self.prefixes.update(b[:k] for k in range(1, len(b) + 1))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text(self, ids: Sequence[int]) -> str:
        return b"".join(self.bytes[i] or b"" for i in ids).decode("utf-8", errors="replace")


# --- the markup automaton -----------------------------------------------------------------------

class MarkupAutomaton:
    """Which tokens may come next so the output stays a well-formed markup of ``text``.

    A configuration is ``(i, inside, nonempty, partial)``: ``text[:i]`` written, an entity open
    or not (and holding at least one character), and the bytes written so far of the next unit.
    Units are one escaped text character, ``<`` (outside an entity, never before whitespace) and
    ``:TYPE>`` (inside a non-empty entity). ``:`` is both a text unit and the start of a close,
    so the automaton keeps a set of configurations (never more than two)."""

    def __init__(self, text: str, table: TokenTable, labels: Sequence[str] = LABELS) -> None:
        self.text, self.table = text, table
        self.units = [_ESCAPED.get(c) or c.encode("utf-8") for c in text]
        self.closes = [f":{label}>".encode() for label in labels]
        self.states = frozenset({(0, False, False, b"")})

    def _next(self, i: int, inside: bool, nonempty: bool) -> list[tuple[bytes, tuple]]:
        """The units allowed in a configuration, each with the configuration it leads to."""
        out = []
        if i < len(self.text):
            out.append((self.units[i], (i + 1, inside, inside, b"")))
            if not inside and not self.text[i].isspace():
                out.append((b"<", (i, True, False, b"")))
        if inside and nonempty:
            out += [(close, (i, False, False, b"")) for close in self.closes]
        return out

    def _step(self, states: frozenset, byte: int) -> frozenset:
        out = set()
        for i, inside, nonempty, partial in states:
            grown = partial + bytes([byte])
            for unit, after in self._next(i, inside, nonempty):
                if unit == grown:
                    out.add(after)
                elif unit.startswith(grown):
                    out.add((i, inside, nonempty, grown))
        return frozenset(out)

    def _next_bytes(self, states: frozenset) -> set[int]:
        return {unit[len(p)] for i, ins, ne, p in states for unit, _ in self._next(i, ins, ne)
                if len(unit) > len(p) and unit.startswith(p)}

    @property
    def done(self) -> bool:
        return (len(self.text), False, False, b"") in self.states

    def allowed(self) -> list[int]:
        """Every token whose whole byte string is a valid continuation (depth-first over the
        automaton, pruned by the set of token prefixes, so a step costs a few set lookups)."""
        out: list[int] = []
        stack = [(b"", self.states)]
        while stack:
            prefix, states = stack.pop()
            for byte in self._next_bytes(states):
                grown = prefix + bytes([byte])
                if grown in self.table.prefixes:
                    after = self._step(states, byte)
                    out += self.table.ids_of.get(grown, ())
                    stack.append((grown, after))
        return out

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that copy the rest of the text as the tokenizer writes it (how a
        fine-tuned model writes it between marks), after the rest of a close half written (``PS``
        of ``:PS>`` written); none where the next unit is open to choice or half a character."""
        if len(self.states) != 1:
            return []
        ((i, inside, nonempty, partial),) = self.states
        units = [unit for unit, _ in self._next(i, inside, nonempty) if unit.startswith(partial)]
        if partial and (len(units) != 1 or units[0] not in self.closes):
            return []
        rest, written, out = (units[0][len(partial):] if partial else b"") + b"".join(self.units[i:]), 0, []
        for token in self.table.encode(rest.decode("utf-8"))[:limit]:
            piece = self.table.bytes[token]
            if not piece or not rest.startswith(piece, written):  # e.g. a prefix space SentencePiece adds
                break
            out.append(token)
            written += len(piece)
        return out

    def advance(self, token: int) -> None:
        for byte in self.table.bytes[token]:
            self.states = self._step(self.states, byte)
        if not self.states:
            raise RuntimeError(f"token {token} is not a valid continuation; constrained decoding is broken")


# --- batched greedy generation with a KV cache ---------------------------------------------------

def _core(model):
    """The causal LM itself, through a peft wrapper (its LoRA layers stay active inside)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder_and_head(model):
    """The transformer body and the output projection of a causal LM ("all-linear" LoRA leaves
    the head alone)."""
    core = _core(model)
    return core.get_decoder(), core.get_output_embeddings()


def _cache_keyword(model) -> str:
    """The body's keyword for its KV cache: ``cache`` in recent transformers, ``past_key_values``
    before. A forward swallows unknown keywords, so the wrong name would decode without the cache."""
    return "cache" if "cache" in inspect.signature(_core(model).get_decoder().forward).parameters else "past_key_values"


def _choose(head, hidden: torch.Tensor, allowed: Sequence[Sequence[int]]) -> list[int]:
    """The greedy token for each row of ``hidden`` (n, hidden) among that row's allowed ids; only
    their logits are computed."""
    width_k = max(len(a) for a in allowed)
    cand = torch.zeros((len(allowed), width_k), dtype=torch.long)
    valid = torch.zeros((len(allowed), width_k), dtype=torch.bool)
    for k, a in enumerate(allowed):
        cand[k, :len(a)] = torch.tensor(a)
        valid[k, :len(a)] = True
    cand, valid = cand.to(hidden.device), valid.to(hidden.device)
    weight = head.weight[cand]  # (n, k, hidden)
    logits = torch.einsum("lkh,lh->lk", weight.to(hidden.dtype), hidden)  # (n, k)
    if head.bias is not None:
        logits = logits + head.bias[cand]
    best = logits.float().masked_fill(~valid, float("-inf")).argmax(-1)  # (n,)
    return cand.gather(1, best[:, None])[:, 0].tolist()


@torch.inference_mode()
def greedy(model, prompts: Sequence[Sequence[int]], pad_id: int, automata: Sequence[MarkupAutomaton] | None,
           stop_ids: set[int], max_new: Sequence[int], draft_tokens: int = 0) -> tuple[list[list[int]], int]:
    """Greedy continuations of left-padded ``prompts`` on a KV cache, and the forward passes made.

    Hand-written rather than ``model.generate`` with a ``LogitsProcessor``: the per-row automaton
    advances right where the token is chosen, a row stops the moment its input is reproduced
    (no end token to force), and only the allowed tokens' logits are computed. The output
    projection onto a 150-260k vocabulary costs more than the whole body of a small model, and
    a constrained step allows a handful of tokens. The same loop serves unconstrained decoding
    (``automata`` None: full logits, stop at ``stop_ids`` or ``max_new``), so speeds compare fairly.
    Softcapping or scaling of final logits is monotonic, so skipping it leaves the argmax alone.
    Constrained decoding with ``draft_tokens`` > 0 verifies that many copied tokens per forward
    (:func:`_verify`); the tokens are the same, one forward per token or not."""
    from transformers import DynamicCache

    decoder, head = _decoder_and_head(model)
    device = head.weight.device
    rows, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    speculative = automata is not None and draft_tokens > 0
    # Verification drops rejected tokens from the cache, so sliding-window layers must keep all of theirs.
    cache = DynamicCache() if speculative else DynamicCache(config=model.config)
    cached = {_cache_keyword(model): cache}
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, **cached,
                     use_cache=True).last_hidden_state[:, -1]  # (rows, hidden)
    if speculative:
        return _verify(decoder, head, cached, hidden, mask, positions[:, -1] + 1, automata, draft_tokens)
    out: list[list[int]] = [[] for _ in prompts]
    done = [bool(automata) and automata[r].done for r in range(rows)]
    forwards, step_pos = 1, positions[:, -1:]  # (rows, 1)
    while not all(done):
        live = [r for r in range(rows) if not done[r]]
        if automata is None:
            choice = dict(zip(live, head(hidden[live]).argmax(-1).tolist()))  # (live, vocab) -> (live,)
        else:
            choice = dict(zip(live, _choose(head, hidden[live], [automata[r].allowed() for r in live])))
        feed = [pad_id] * rows
        for r, token in choice.items():
            feed[r] = token
            if automata is None:
                if token in stop_ids:
                    done[r] = True
                    continue
                out[r].append(token)
                done[r] = len(out[r]) >= max_new[r]
            else:
                out[r].append(token)
                automata[r].advance(token)
                done[r] = automata[r].done
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
        step_pos = step_pos + 1
        hidden = decoder(input_ids=torch.tensor(feed, device=device)[:, None], attention_mask=mask, position_ids=step_pos,
                         **cached, use_cache=True).last_hidden_state[:, -1]  # (rows, hidden)
        forwards += 1
    return out, forwards


def _verify(decoder, head, cached: dict, hidden: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor,
            automata: Sequence[MarkupAutomaton], draft_tokens: int) -> tuple[list[list[int]], int]:
    """Constrained greedy decoding that checks copied text in one forward pass: speculative
    decoding with the input as the draft. Each forward feeds a row's chosen token and up to
    ``draft_tokens`` tokens that copy the rest of its text (:meth:`MarkupAutomaton.draft`); the
    draft is kept up to the first position where the constrained greedy choice differs (an
    entity opens or closes, or the text is split into other tokens), and that choice comes next.
    The cache then keeps only the tokens kept, each row re-left-padded, so every row looks as if
    it had been decoded one token at a time."""
    out: list[list[int]] = [[] for _ in automata]
    rows = list(range(len(automata)))  # the cache's rows, in order
    (cache,) = cached.values()  # {keyword: the KV cache}, as the body takes it
    todo = [r for r in rows if not automata[r].done]
    pending = dict(zip(todo, _choose(head, hidden[todo], [automata[r].allowed() for r in todo]))) if todo else {}
    keep, block, forwards = [0] * len(rows), 0, 1  # pending: the chosen token to feed next, by row
    while True:
        for r, token in pending.items():
            out[r].append(token)
            automata[r].advance(token)
        live = [r for r in rows if r in pending and not automata[r].done]
        if not live:
            return out, forwards
        where = {r: k for k, r in enumerate(rows)}
        mask, next_pos = _compact(cache, mask, next_pos, [where[r] for r in live],
                                  [keep[where[r]] for r in live], block)
        feeds = [[pending[r]] + automata[r].draft(draft_tokens) for r in live]
        block = max(len(f) for f in feeds)
        ids = torch.tensor([f + [f[0]] * (block - len(f)) for f in feeds], device=mask.device)  # (live, block)
        mask = torch.cat([mask, mask.new_ones((len(live), block))], dim=1)
        positions = next_pos[:, None] + torch.arange(block, device=mask.device)
        states = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, **cached,
                         use_cache=True).last_hidden_state  # (live, block, hidden)
        forwards += 1
        rows, keep, pending = live, [1] * len(live), {}
        checking = list(range(len(live)))  # rows whose draft is still being verified, at column keep - 1
        while checking:
            picks = _choose(head, states[checking, [keep[k] - 1 for k in checking]],
                            [automata[live[k]].allowed() for k in checking])
            still = []
            for k, pick in zip(checking, picks):
                r, j = live[k], keep[k]
                if j < len(feeds[k]) and feeds[k][j] == pick:
                    out[r].append(pick)
                    automata[r].advance(pick)
                    keep[k] += 1
                    if not automata[r].done:
                        still.append(k)
                else:
                    pending[r] = pick
            checking = still


def _compact(cache, mask: torch.Tensor, next_pos: torch.Tensor, select: list[int], keep: list[int],
             block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``select`` rows of the cache and, of each one's last ``block`` columns, the first
    ``keep``; shorter rows are padded on the left, so that columns stay consecutive positions
    (sliding-window masks count columns). Returns the matching mask and next positions."""
    width = mask.shape[1] - block + max(keep)
    if select == list(range(mask.shape[0])) and min(keep) == max(keep):  # the same cut for all: no copy
        cache.crop(width - mask.shape[1])
        return mask[:, :width], next_pos + max(keep)
    kept = torch.tensor(keep, device=mask.device)
    rows = torch.tensor(select, device=mask.device)
    source = torch.arange(width, device=mask.device)[None] - (max(keep) - kept)[:, None]  # (rows, width)
    filler = source < 0
    source = source.clamp(min=0)
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name)[rows]  # (rows, heads, columns, dim)
            index = source[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
            setattr(layer, name, states.gather(2, index))
    mask = mask[rows].gather(1, source).masked_fill(filler, 0)
    return mask, next_pos[rows] + kept


# --- parsing model output back to spans over the input ------------------------------------------

def align_spans(written: str, spans: Sequence[Span], text: str) -> list[Span]:
    """Move spans over ``written`` (what the model wrote) onto ``text`` (the real input): through
    the characters the two share (difflib), else to the nearest occurrence of the surface;
    spans that cannot be placed, or that would overlap, are dropped."""
    at: dict[int, int] = {}
    for a, b, n in difflib.SequenceMatcher(None, written, text, autojunk=False).get_matching_blocks():
        at.update({a + k: b + k for k in range(n)})
    placed: list[Span] = []
    for span in spans:
        surface = written[span.start:span.end].strip()
        start = at.get(span.start)
        if start is not None and text.startswith(surface, start) and surface:
            placed.append(Span(start, start + len(surface), span.label))
            continue
        hits = [m.start() for m in re.finditer(re.escape(surface), text)] if surface else []
        if hits:
            guess = at.get(span.start, span.start)
            best = min(hits, key=lambda h: abs(h - guess))
            placed.append(Span(best, best + len(surface), span.label))
    out, last = [], 0
    for span in sorted(placed):
        if span.start >= last:
            out.append(span)
            last = span.end
    return out


def trim_span(text: str, span: Span) -> Span | None:
    """The span without surrounding whitespace (None if nothing is left)."""
    s, e = trim(text, span.start, span.end)
    return Span(s, e, span.label) if e > s else None


def read_output(output: str, text: str, labels: Sequence[str] = LABELS) -> tuple[list[Span], bool]:
    """Spans over ``text`` from the model's ``output``, and whether it parsed exactly (valid
    markup of exactly ``text``). Otherwise the tolerant path recovers what it can."""
    try:
        written, spans = parse_markup(output, labels)
        exact = written == text
    except MarkupError:
        exact = False
    if not exact:
        written, spans = parse_markup(output, labels, strict=False)
        spans = align_spans(written, spans, text)
    trimmed = (trim_span(text, s) for s in spans)
    return [s for s in trimmed if s is not None], exact


# --- long texts ------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?。…][\"'”’)\]]*\s+")


def chunks(text: str, max_chars: int) -> list[tuple[int, str]]:
    """``(offset, piece)`` pieces of at most ``max_chars`` characters covering ``text``: cut
    after the last sentence end in the window's second half, else at its last whitespace, else
    hard; so an entity is split only when a window holds no break at all."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    out, start = [], 0
    while len(text) - start > max_chars:
        window = text[start:start + max_chars]
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > max_chars // 2]
        spaces = [m.end() for m in re.finditer(r"\s+", window) if 0 < m.end() < len(window)]
        cut = ends[-1] if ends else spaces[-1] if spaces else max_chars
        out.append((start, window[:cut]))
        start += cut
    out.append((start, text[start:]))
    return out
