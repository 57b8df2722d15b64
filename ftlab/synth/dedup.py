"""Near-duplicate removal by embedding cosine, with thresholds calibrated for the embedding model in use.

A cosine threshold means nothing on its own: 0.9754 suits one model and drops nothing (or everything) with
another. `calibrate` embeds a shipped set of labelled question pairs — paraphrases that ask the same thing, and
pairs on the same topic that ask different things — in English and Japanese, and picks for each language the
threshold that classifies the pairs best. The report says how well the model separates them, so a user can see
when to bring a better embedding model (`--embedder FOLDER`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftlab.config import home
from ftlab.data.near_dup import normalise
from ftlab.embed import DEFAULT_EMBEDDER, embed, resolve_embedder
from ftlab.synth.clean import is_japanese

CALIBRATION_PAIRS = Path(__file__).with_name("calibration.jsonl")


@dataclass
class LanguageCalibration:
    language: str
    threshold: float
    pairs: int
    correct: int
    duplicate_cosines: list[float]
    distinct_cosines: list[float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs

    def describe(self) -> str:
        dup, dis = np.array(self.duplicate_cosines), np.array(self.distinct_cosines)
        missed = int((dup < self.threshold).sum())
        merged = int((dis >= self.threshold).sum())
        return (
            f"{self.language}: threshold {self.threshold:.3f}; paraphrases {dup.min():.2f}–{dup.max():.2f} "
            f"(median {np.median(dup):.2f}), distinct questions {dis.min():.2f}–{dis.max():.2f} "
            f"(median {np.median(dis):.2f}); {self.correct}/{self.pairs} pairs right "
            f"({missed} paraphrases missed, {merged} distinct pairs merged)"
        )


@dataclass
class Calibration:
    embedder: str
    languages: dict[str, LanguageCalibration] = field(default_factory=dict)
    override: float | None = None

    def threshold(self, language: str) -> float:
        return self.override if self.override is not None else self.languages[language].threshold

    def describe(self) -> str:
        lines = [f"dedup calibration for embedder '{self.embedder}' on {CALIBRATION_PAIRS.name}:"]
        lines += [f"  {cal.describe()}" for cal in self.languages.values()]
        if self.override is not None:
            lines.append(f"  threshold overridden to {self.override:.3f} for every language (--dedup-threshold)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "embedder": self.embedder,
            "override": self.override,
            "languages": {
                lang: {"threshold": round(cal.threshold, 4), "accuracy": round(cal.accuracy, 4), "pairs": cal.pairs}
                for lang, cal in self.languages.items()
            },
        }


def best_threshold(duplicate: np.ndarray, distinct: np.ndarray) -> tuple[float, int]:
    """The cut between the two groups of cosines that classifies most pairs right (ties: the highest cut,
    which drops fewer distinct questions); returns (threshold, pairs right)."""
    values = np.unique(np.concatenate([duplicate, distinct]))
    cuts = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
    best = (float(cuts[-1]), -1)
    for cut in cuts:
        correct = int((duplicate >= cut).sum() + (distinct < cut).sum())
        if correct >= best[1]:
            best = (float(cut), correct)
    return best


def calibrate(embedder: str = DEFAULT_EMBEDDER, override: float | None = None) -> Calibration:
    """Per-language thresholds for `embedder`, chosen on the shipped labelled pairs (cached in FTLAB_HOME/synth,
    keyed by the embedding model's folder and the pairs' content)."""
    pairs = CALIBRATION_PAIRS.read_bytes()
    key = hashlib.sha256(resolve_embedder(embedder).encode() + b"\0" + pairs).hexdigest()[:16]
    cache = home() / "synth" / f"calibration-{key}.json"
    if cache.exists():
        languages = {lang: LanguageCalibration(**cal) for lang, cal in json.loads(cache.read_text()).items()}
        return Calibration(embedder=embedder, languages=languages, override=override)
    calibration = _calibrate(embedder, pairs.decode("utf-8"), override)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({lang: vars(cal) for lang, cal in calibration.languages.items()}))
    return calibration


def _calibrate(embedder: str, pairs: str, override: float | None) -> Calibration:
    rows = [json.loads(line) for line in pairs.splitlines() if line.strip()]
    a = embed([r["a"] for r in rows], embedder)
    b = embed([r["b"] for r in rows], embedder)
    cosines = (a * b).sum(axis=1)
    calibration = Calibration(embedder=embedder, override=override)
    for language in sorted({r["lang"] for r in rows}):
        dup = np.array([c for c, r in zip(cosines, rows, strict=True) if r["lang"] == language and r["duplicate"]])
        dis = np.array([c for c, r in zip(cosines, rows, strict=True) if r["lang"] == language and not r["duplicate"]])
        threshold, correct = best_threshold(dup, dis)
        calibration.languages[language] = LanguageCalibration(
            language, round(threshold, 6), len(dup) + len(dis), correct, dup.round(4).tolist(), dis.round(4).tolist()
        )
    return calibration


def language_of(text: str) -> str:
    return "ja" if is_japanese(text) else "en"


@dataclass
class Verdict:
    duplicate_of: str | None
    cosine: float


class Deduper:
    """Remembers kept texts; says whether a new one repeats one of them: the same normalised text, or — given a
    calibration — an embedding cosine at or above the threshold for the new text's language."""

    def __init__(self, calibration: Calibration | None) -> None:
        self.calibration = calibration
        self.keys: list[str] = []
        self.exact: dict[str, str] = {}
        self.vectors = np.zeros((0, 0), dtype=np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        return embed(texts, self.calibration.embedder) if self.calibration is not None else None

    def add(self, keys: list[str], texts: list[str], vectors: np.ndarray | None = None) -> None:
        if not texts:
            return
        if vectors is None:
            vectors = self._embed(texts)
        if vectors is not None:
            self.vectors = vectors if not self.keys else np.vstack([self.vectors, vectors])
        self.keys.extend(keys)
        for key, text in zip(keys, texts, strict=True):
            self.exact.setdefault(normalise(text), key)

    def filter(self, keys: list[str], texts: list[str]) -> list[Verdict]:
        """Decide each text in order, remembering the new ones (so a later text is also checked against the
        earlier new ones of the same call)."""
        if not texts:
            return []
        vectors = self._embed(texts)
        verdicts = []
        for n, (key, text) in enumerate(zip(keys, texts, strict=True)):
            vector = vectors[n : n + 1] if vectors is not None else None
            same = self.exact.get(normalise(text))
            if same is not None:
                verdicts.append(Verdict(same, 1.0))
                continue
            best_cosine = 0.0
            if vector is not None and self.keys:
                cosines = self.vectors @ vector[0]
                best = int(np.argmax(cosines))
                best_cosine = float(cosines[best])
                if best_cosine >= self.calibration.threshold(language_of(text)):
                    verdicts.append(Verdict(self.keys[best], best_cosine))
                    continue
            verdicts.append(Verdict(None, best_cosine))
            self.add([key], [text], vector)
        return verdicts
