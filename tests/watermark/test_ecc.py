"""Error control of the watermark payload (watermark/ecc.py): soft Viterbi decoding and the CRC-16."""

from __future__ import annotations

import numpy as np
import pytest

from watermark import ecc


@pytest.mark.slow
def test_code_corrects_noisy_soft_bits_and_crc_rejects_noise():
    rng = np.random.default_rng(7)
    scramble = rng.integers(0, 2, ecc.INFO_BITS).astype(np.uint8)
    decoded, raw_errors = 0, []
    for _ in range(200):
        wm_id = int(rng.integers(1, 2 ** 32))
        code = ecc.encode_payload(wm_id, scramble)
        assert code.size == ecc.CODE_BITS == 162
        soft = (1 - 2.0 * code) + rng.normal(0, 0.9, code.size)     # ~13 % hard-decision errors
        raw_errors.append(np.mean((soft < 0) != (code == 1)))
        decoded += ecc.decode_payload(soft, scramble)[0] == wm_id
    assert np.mean(raw_errors) > 0.1
    assert decoded >= 196
    # pure noise, a blank and a constant picture never give a valid payload
    false = sum(ecc.decode_payload(rng.normal(0, 1, ecc.CODE_BITS), scramble)[0] is not None for _ in range(3000))
    assert false <= 2   # expected 3000 * 2^-16 = 0.05
    assert ecc.decode_payload(np.zeros(ecc.CODE_BITS), scramble)[0] is None
    assert ecc.decode_payload(np.ones(ecc.CODE_BITS), scramble)[0] is None


def test_viterbi_is_exact_without_noise_and_corrects_a_burst():
    rng = np.random.default_rng(1)
    info = rng.integers(0, 2, 48).astype(np.uint8)
    code = ecc.conv_encode(info)
    soft = 1 - 2.0 * code
    assert np.array_equal(ecc.viterbi_decode(soft, 48), info)
    soft[60:64] *= -1          # four consecutive code bits flipped
    assert np.array_equal(ecc.viterbi_decode(soft, 48), info)


def test_crc16_known_value():
    bits = np.unpackbits(np.frombuffer(b"123456789", np.uint8))
    assert ecc.crc16(bits) == 0x29B1   # CRC-16/CCITT-FALSE check value
