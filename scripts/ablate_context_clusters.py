"""Kiwi's CoNg context clusters as a Bi-LSTM-CRF input, an ablation: scripts/ablate.py with the
lexicon column (off in the default) carrying, per character, the id of the context cluster that
Kiwi's CoNg language model assigns to the text up to the morpheme over it (``most_similar_contexts``
of that prefix, top 1: the cluster itself). Clusters seen at least MIN_COUNT times in training get
an embedding (``--variant NAME:lexicon_dim=D``); others share one "unknown" row.

    python scripts/ablate_context_clusters.py MIN_COUNT bilstm-crf --variant ctx32:lexicon_dim=32,seed=13 \\
        --repeats 1 --data ../shared/data/klue-ner-v1.1 --out ablation.jsonl --save models
"""
import json
import sys
import time
from collections import Counter
from pathlib import Path

from kner import data as kdata
from kner.models import bilstm_crf
from kner.morphology import kiwi

sys.path.insert(0, str(Path(__file__).parent))
import ablate  # noqa: E402  (its main() reads the patched prepare_splits)


class ContextClusters:
    """Stands in for :class:`kner.gazetteer.Lexicon` (``table`` values are the known classes,
    ``tags`` gives ``B-``/``I-`` of them per character, ``U`` for unknown, ``O`` outside morphemes)."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self._ids: dict[str, list[int]] = {}

    def ids(self, texts: list[str]) -> None:
        """Per character, the cluster of the context ending with the last morpheme over it (-1: none)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._ids]
        start = time.perf_counter()
        for text, tokens in zip(todo, kiwi().tokenize(todo)):
            row = [-1] * len(text)
            for i, tok in enumerate(tokens):
                found = kiwi().most_similar_contexts(tokens[: i + 1], top_n=1)
                row[tok.start : tok.start + tok.len] = [found[0].id if found else -1] * tok.len
            self._ids[text] = row
        if len(todo) > 1:
            print(f"context clusters: {len(todo)} texts in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    def fit(self, texts: list[str], min_count: int) -> None:
        self.ids(texts)
        counts = Counter(c for t in texts for c in _runs(self._ids[t]))
        self.table = {str(c): str(c) for c, n in counts.items() if n >= min_count}
        print(f"context clusters: {len(counts)} seen in training, {len(self.table)} kept (>= {min_count})",
              file=sys.stderr)

    def tags(self, text: str) -> list[str]:
        self.ids([text])
        out, prev = [], None
        for c in self._ids[text]:
            if c < 0:
                out.append("O")
            elif str(c) in self.table:
                out.append(("I-" if c == prev else "B-") + str(c))
            else:
                out.append("U")
            prev = c
        return out

    def save(self, directory: Path) -> None:
        (Path(directory) / "context_clusters.json").write_text(json.dumps(sorted(self.table)), encoding="utf-8")


def _runs(row: list[int]) -> list[int]:
    """The cluster of each morpheme once (a run of equal ids is one morpheme's characters)."""
    return [c for i, c in enumerate(row) if c >= 0 and (i == 0 or row[i - 1] != c)]


def main() -> None:
    min_count = int(sys.argv[1])
    clusters, prepare = ContextClusters(), kdata.prepare_splits

    def with_clusters(*args, **kwargs):
        splits = prepare(*args, **kwargs)
        clusters.fit([ex.text for ex in splits.train], min_count)
        return splits

    kdata.prepare_splits = with_clusters
    bilstm_crf.lexicon_from_kiwi = lambda: None
    bilstm_crf.Lexicon = lambda _table: clusters
    lex_tags = bilstm_crf.BiLSTMCRFTagger._lex_tags

    def batched(self, texts):  # one Kiwi call per batch of texts, not per text
        clusters.ids(list(texts))
        return lex_tags(self, texts)

    bilstm_crf.BiLSTMCRFTagger._lex_tags = batched
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    ablate.main()


if __name__ == "__main__":
    main()
