"""Identifying a mark by matching it against the ids a registry issued.

Blind decoding (Viterbi + CRC, watermark/ecc.py) must get all 48 payload bits right out
of 2^48 possibilities. A tracer that knows the N ids it issued needs far less: it scores
each issued id's codeword against the clip's code-bit log-likelihood ratios and asks
whether the best one stands out. A degraded clip whose payload the Viterbi decoder gets
a bit or two wrong is still identified this way.

Statistics. The score of a codeword is the correlation of its +-1 signs with the LLRs.
For an id whose mark is not in the clip that is a sum of the LLRs with ~random signs, so
by Hoeffding's inequality P(score >= z * sd) <= exp(-z^2 / 2) whatever the LLRs' sizes,
with sd = sqrt(sum LLR^2). The spread is also measured on the clip itself, from NULL_IDS
fixed pseudo-random ids, and the larger of the two is used. Over N issued ids the chance
that an unmarked one scores as high as the best is at most N * exp(-z^2 / 2). An issued id
that happens to be close to the marked one shares most of its codeword and scores high
too: so a match also needs the runner-up to look like chance (its own bound above
AMBIGUOUS_P). Two ids standing out at once is refused, not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import ecc

NULL_IDS = 1024                 # random ids that measure the score's spread without this mark
MAX_FALSE_MATCH_P = 1e-6        # the best id's bound must be below this ...
AMBIGUOUS_P = 1e-3              # ... and the runner-up's above this (it scores no more than chance)
_CHUNK = 8192                   # ids scored at a time (bounds memory for large registries)


@dataclass(frozen=True)
class Match:
    wm_id: int
    z: float                    # the id's score in standard deviations of an unmarked id's
    runner_up_z: float          # the next best issued id's (-inf if only one was issued)
    false_match_p: float        # bound on P(an unmarked issued id scores z)
    candidates: int             # issued ids scored


Basis = tuple[np.ndarray, np.ndarray]   # (codeword of id 0, each id bit's change to it)


def _basis(scramble: np.ndarray) -> Basis:
    """The CRC is affine and the convolutional code linear over GF(2): an id's codeword is that
    of id 0 XOR the changes its set bits make (33 encodings, for any number of ids)."""
    base = ecc.encode_payload(0, scramble)
    per_bit = np.array([ecc.encode_payload(1 << (ecc.ID_BITS - 1 - j), scramble) ^ base for j in range(ecc.ID_BITS)],
                       dtype=np.int64)
    return base, per_bit


def _codewords(ids: np.ndarray, basis: Basis) -> np.ndarray:
    base, per_bit = basis
    shifts = np.arange(ecc.ID_BITS - 1, -1, -1, dtype=np.uint64)
    bits = ((np.asarray(ids, dtype=np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.int64)
    return ((bits @ per_bit) + base) % 2


def codewords(ids: np.ndarray, scramble: np.ndarray) -> np.ndarray:
    """The code bits (len(ids) x CODE_BITS, 0/1) of many ids at once."""
    return _codewords(ids, _basis(scramble))


def _scores(llr: np.ndarray, ids: np.ndarray, basis: Basis) -> np.ndarray:
    out = np.empty(len(ids))
    for start in range(0, len(ids), _CHUNK):
        signs = 1.0 - 2.0 * _codewords(ids[start:start + _CHUNK], basis)
        out[start:start + _CHUNK] = signs @ llr
    return out


def _chance(z: float, n: int) -> float:
    """Bound on P(any of n unmarked ids scores z or more)."""
    return min(1.0, n * math.exp(-0.5 * z * z)) if z > 0 else 1.0


def match_issued(llr: np.ndarray, scramble: np.ndarray, issued: Collection[int]) -> Optional[Match]:
    """How the best-scoring issued id stands out from chance, or None without LLRs or ids.
    `accepted(match)` says whether it identifies the clip."""
    llr = np.asarray(llr, dtype=np.float64)
    if llr.shape != (ecc.CODE_BITS,) or not issued or not np.any(llr):
        return None
    ids = np.fromiter(issued, dtype=np.uint64, count=len(issued))
    null_ids = np.random.default_rng(0x5EED).integers(0, 1 << ecc.ID_BITS, NULL_IDS, dtype=np.uint64)
    basis = _basis(scramble)
    null = _scores(llr, null_ids, basis)
    spread = max(float(np.std(null)), math.sqrt(float(llr @ llr)))
    z = _scores(llr, ids, basis) / spread
    order = np.argsort(-z)
    runner_up = float(z[order[1]]) if len(ids) > 1 else -math.inf
    best = float(z[order[0]])
    return Match(int(ids[order[0]]), best, runner_up, _chance(best, len(ids)), len(ids))


def accepted(match: Optional[Match]) -> bool:
    """The best id is far above chance and alone there."""
    return (match is not None and match.false_match_p <= MAX_FALSE_MATCH_P
            and _chance(match.runner_up_z, match.candidates) >= AMBIGUOUS_P)
