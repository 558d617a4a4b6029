"""Matching code-bit evidence against issued ids (watermark/match.py): the vectorised
codewords are the encoder's, a noisy mark the Viterbi decoder misreads is still matched to
its id, noise matches nothing, and two ids that both stand out are refused."""

from __future__ import annotations

import numpy as np

from watermark import ecc
from watermark.match import accepted, codewords, match_issued

SCRAMBLE = np.random.default_rng(1).integers(0, 2, ecc.INFO_BITS).astype(np.uint8)


def noisy_llr(wm_id: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """LLRs of the id's code bits through Gaussian noise (BPSK, unit amplitude)."""
    signs = 1.0 - 2.0 * ecc.encode_payload(wm_id, SCRAMBLE)
    return 2 * (signs + rng.normal(0, sigma, signs.size)) / sigma ** 2


def test_codewords_are_the_encoders():
    ids = [0, 1, 0xFFFFFFFF, 0x80000000] + [int(x) for x in np.random.default_rng(2).integers(0, 2 ** 32, 50)]
    many = codewords(np.array(ids, dtype=np.uint64), SCRAMBLE)
    for wm_id, row in zip(ids, many):
        assert np.array_equal(row, ecc.encode_payload(wm_id, SCRAMBLE))


def test_a_mark_too_noisy_to_decode_is_matched_to_its_id():
    rng = np.random.default_rng(3)
    issued = [int(x) for x in rng.integers(0, 2 ** 32, 5000)]
    decoded = matched = 0
    for trial in range(40):
        wm_id = issued[trial]
        llr = noisy_llr(wm_id, rng, sigma=1.3)   # ~22 % of the code bits flipped
        decoded += ecc.decode_payload(llr, SCRAMBLE)[0] == wm_id
        found = match_issued(llr, SCRAMBLE, issued)
        if accepted(found):
            assert found is not None and found.wm_id == wm_id
            matched += 1
    assert decoded <= 25 and matched == 40


def test_noise_and_unissued_marks_match_nothing():
    rng = np.random.default_rng(4)
    issued = [int(x) for x in rng.integers(0, 2 ** 32, 5000)]
    for _ in range(100):
        found = match_issued(rng.normal(0, 3, ecc.CODE_BITS), SCRAMBLE, issued)
        assert found is not None and not accepted(found) and found.false_match_p > 1e-3
    for _ in range(20):   # a clear mark whose id was never issued here
        assert not accepted(match_issued(noisy_llr(int(rng.integers(0, 2 ** 32)), rng, 0.6), SCRAMBLE, issued))


def test_two_ids_that_both_stand_out_are_refused_not_guessed():
    rng = np.random.default_rng(5)
    wm_id = 0x12345678
    neighbour = 0x12345660  # of the ids 1 or 2 bits away, the one whose codeword is closest (32 bits)
    llr = noisy_llr(wm_id, rng, sigma=1.1)
    assert int(np.sum(ecc.encode_payload(wm_id, SCRAMBLE) != ecc.encode_payload(neighbour, SCRAMBLE))) == 32
    found = match_issued(llr, SCRAMBLE, [wm_id, neighbour, 7, 9])
    assert found is not None and found.wm_id == wm_id and found.runner_up_z > 4.5 and not accepted(found)
    assert accepted(match_issued(llr, SCRAMBLE, [wm_id, 7, 9]))


def test_no_evidence_or_no_ids_is_no_match():
    assert match_issued(np.zeros(ecc.CODE_BITS), SCRAMBLE, [1, 2]) is None
    assert match_issued(np.ones(ecc.CODE_BITS), SCRAMBLE, []) is None
    assert match_issued(np.ones(5), SCRAMBLE, [1]) is None
    assert not accepted(None)
