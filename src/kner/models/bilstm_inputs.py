"""The BiLSTM-CRF's inputs: a text becomes a ``(len(text), 11)`` tensor of ids, one row per character.

No network and no training here: the network reads only these ids, and PPMI-SVD vectors computed
from the same ids initialise its syllable embeddings.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..align import eojeol_positions
from ..gazetteer import Gazetteer, Lexicon
from ..morphology import kiwi_model_version, kiwi_placeholder, kiwi_size
from .crf import char_class

if TYPE_CHECKING:
    from .bilstm_crf import BiLSTMCRFConfig

CLASSES = "HDSLCJPA"  # char_class() values: one UNK id per class, so an unseen Hanja is still Hanja
EOJEOL = {"_": 1, "B": 2, "I": 3, "E": 4, "S": 5}
N_JAMO = 1 + 19 + 21 + 28 + len(CLASSES)
# Columns of an encoded text (seq, 11): syllable, left/right bigram, eojeol position, jamo (initial,
# medial, final; non-Hangul: its class in the first slot), Kiwi tag, Kiwi morpheme, gazetteer match,
# lexicon match.
CHAR, BI_L, BI_R, EOJ, JAMO, POS, MORPH, GAZ, LEX = 0, 1, 2, 3, 4, 7, 8, 9, 10


def _jamo(ch: str) -> tuple[int, int, int]:
    o = ord(ch) - 0xAC00
    if 0 <= o < 11172:
        return 1 + o // 588, 20 + (o % 588) // 28, 41 + o % 28
    return 69 + CLASSES.index(char_class(ch)), 0, 0


class Vocab:
    """Syllable, bigram and Kiwi-tag ids from the training text, the Kiwi morphemes that have
    a vector row, and the gazetteer's and lexicon's tags (0 is padding everywhere)."""

    def __init__(self, chars: list[str], bigrams: list[str], pos: list[str], morphemes: list[int] = (),
                 kiwi_model: str | None = None, gaz: list[str] = (), lex: list[str] = ()) -> None:
        self.chars, self.bigrams, self.pos, self.morphemes = chars, bigrams, pos, list(morphemes)
        self.gaz, self.lex = list(gaz), list(lex)
        self.gaz_id = {t: i + 1 for i, t in enumerate(self.gaz)}  # O is 0: no match, like padding
        self.lex_id = {t: i + 1 for i, t in enumerate(self.lex)}
        self.kiwi_model = kiwi_model  # the Kiwi model whose ids ``morphemes`` are
        self.morph_row = {m: i + 1 for i, m in enumerate(self.morphemes)}
        self.char_id = {c: i + 1 + len(CLASSES) for i, c in enumerate(chars)}
        self.bigram_id = {b: i + 2 for i, b in enumerate(bigrams)}  # 1 = UNK
        self.pos_id = {p: i + 2 for i, p in enumerate(pos)}
        self.unk = {k: i + 1 for i, k in enumerate(CLASSES)}
        self._syllable_ids: dict[str, tuple[int, int, int, int]] = {}

    @classmethod
    def build(cls, texts: Sequence[str], kiwi_feats: Sequence[tuple] | None, cfg: BiLSTMCRFConfig,
              gazetteer: Gazetteer | None = None, lexicon: Lexicon | None = None) -> "Vocab":
        chars = Counter(c for t in texts for c in t)
        bigrams = Counter(p[i : i + 2] for t in texts for p in ["\x02" + t + "\x03"] for i in range(len(t) + 1))
        tags = Counter(tag for seq, _ in kiwi_feats or [] for tag in seq) if cfg.kiwi_dim else {}
        morphemes = set()
        if cfg.kiwi_vectors:
            if not 0 <= cfg.kiwi_vocab <= kiwi_size():
                raise ValueError(f"kiwi_vocab must be 0 to {kiwi_size()} (Kiwi's morpheme count), not {cfg.kiwi_vocab}")
            morphemes = set(range(cfg.kiwi_vocab)) | {m for _, ids in kiwi_feats for m in ids if m >= 0}
        return cls(sorted(c for c, n in chars.items() if n >= cfg.min_freq),
                   sorted(b for b, n in bigrams.items() if n >= cfg.bigram_min_freq), sorted(tags),
                   sorted(morphemes), kiwi_model_version() if morphemes else None,
                   _bio_values(gazetteer), ["U", *_bio_values(lexicon)] if lexicon else [])

    def sizes(self) -> tuple[int, int, int, int, int, int]:
        return (1 + len(CLASSES) + len(self.chars), 2 + len(self.bigrams), 2 + len(self.pos), 1 + len(self.morphemes),
                1 + len(self.gaz), 1 + len(self.lex))

    def encode(self, text: str, kiwi_feats: tuple | None, gaz_tags: list[str] | None = None,
               lex_tags: list[str] | None = None) -> torch.Tensor:
        """``(len(text), 11)`` ids; see the column constants. ``kiwi_feats``: per character the
        ``B-``/``I-`` tag and the Kiwi id of the morpheme covering it (``_`` and -1 where none);
        ``gaz_tags`` / ``lex_tags``: per character the gazetteer's / lexicon's tag (``O`` where none)."""
        return self.encode_many([text], [kiwi_feats], gaz_tags=[gaz_tags], lex_tags=[lex_tags])[0]

    def encode_many(self, texts: Sequence[str], kiwi_feats: Sequence[tuple | None],
                    extra_rows: dict[int, int] | None = None,
                    gaz_tags: Sequence[list[str] | None] | None = None,
                    lex_tags: Sequence[list[str] | None] | None = None) -> list[torch.Tensor]:
        """``encode`` for many texts at once: one flat list per column and one tensor for all,
        split back per text (a tensor per text cost more than the lookups). ``extra_rows``: vector
        rows beyond the table for Kiwi morphemes outside it (see ``BiLSTMCRFTagger._extend``)."""
        syllable, extra = self._syllable_ids, extra_rows or {}
        chars = [syllable.get(c) or self._syllable(c) for t in texts for c in t]  # (N, 4)
        left, right, eoj, pos, morph, gaz, lex = [], [], [], [], [], [], []
        kiwi_pairs = (f or (None, None) for f in kiwi_feats)
        none = [None] * len(texts)
        for text, (tags, ids), matched, forms in zip(texts, kiwi_pairs, gaz_tags or none, lex_tags or none):
            padded = "\x02" + text + "\x03"
            bi = [self.bigram_id.get(padded[i : i + 2], 1) for i in range(len(text) + 1)]
            left += bi[:-1]
            right += bi[1:]
            eoj += [EOJEOL[p] for p in eojeol_positions(text)]
            pos += [self.pos_id.get(t, 1) for t in tags] if tags else [0] * len(text)
            morph += [self._morph(k, extra) for k in ids] if ids else [0] * len(text)
            gaz += [self.gaz_id.get(t, 0) for t in matched] if matched else [0] * len(text)
            lex += [self.lex_id.get(t, 0) for t in forms] if forms else [0] * len(text)
        flat = torch.cat([torch.tensor(chars, dtype=torch.long).view(-1, 4),
                          torch.tensor([left, right, eoj, pos, morph, gaz, lex], dtype=torch.long).T], dim=1)
        flat = flat[:, [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10]]  # CHAR, BI_L, BI_R, EOJ, JAMO x3, POS, MORPH, GAZ, LEX
        return list(flat.split([len(t) for t in texts]))

    def _syllable(self, c: str) -> tuple[int, int, int, int]:
        """Syllable id and jamo ids of a character, memoised: texts reuse a few thousand characters."""
        self._syllable_ids[c] = (self.char_id.get(c) or self.unk[char_class(c)], *_jamo(c))
        return self._syllable_ids[c]

    def _morph(self, kiwi_id: int, extra_rows: dict[int, int]) -> int:
        """Row of a Kiwi morpheme: its own (in the table or among ``extra_rows``), else its tag's
        formless morpheme's."""
        if kiwi_id < 0 or not self.morphemes:
            return 0
        row = self.morph_row.get(kiwi_id) or extra_rows.get(kiwi_id)
        return row or self.morph_row.get(kiwi_placeholder(kiwi_id), 0)


def _bio_values(table: Gazetteer | Lexicon | None) -> list[str]:
    return sorted(f"{p}-{c}" for c in set(table.table.values()) for p in "BI") if table else []


def ppmi_vectors(encoded: Sequence[torch.Tensor], n: int, dim: int, seed: int, window: int = 2) -> torch.Tensor:
    """Syllable vectors from the SVD of the positive-PMI co-occurrence matrix (±window)."""
    import numpy as np
    from scipy import sparse
    from sklearn.utils.extmath import randomized_svd

    ids = torch.cat([torch.cat([e[:, CHAR], torch.tensor([-1])]) for e in encoded]).numpy()
    rows, cols = [], []
    for d in range(1, window + 1):
        a, b = ids[:-d], ids[d:]
        ok = (a >= 0) & (b >= 0)
        rows += [a[ok], b[ok]]
        cols += [b[ok], a[ok]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
    m.sum_duplicates()
    row, col = np.asarray(m.sum(1)).ravel(), np.asarray(m.sum(0)).ravel()
    coo = m.tocoo()
    pmi = np.log(coo.data * m.sum() / (row[coo.row] * col[coo.col]))
    ppmi = sparse.csr_matrix((np.maximum(pmi, 0), (coo.row, coo.col)), shape=(n, n))
    u, s, _ = randomized_svd(ppmi, min(dim, n - 1), random_state=seed)
    vec = u * np.sqrt(s)
    vec = np.pad(vec / (vec.std() + 1e-8), ((0, 0), (0, dim - vec.shape[1])))
    return torch.tensor(vec, dtype=torch.float32)
