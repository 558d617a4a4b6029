"""Error control for the forensic watermark payload: CRC-16 and a soft-decision
convolutional code.

Payload: a 32-bit watermark id and its CRC-16 (48 bits), XORed with a key-derived
scrambling sequence, then encoded with the rate-1/3, constraint-length-7
convolutional code of LTE (generators 133, 171, 165 octal), zero-terminated: 54
trellis steps, 162 code bits. Decoding is a soft-decision Viterbi decoder (maximum
likelihood over the code for Gaussian noise on the soft values), so reliable and
unreliable code bits are weighed by how reliable they are; at raw bit error rates
of ~10 % (hard decisions) it still recovers the payload, which a block code on hard
decisions of the same rate would not.

Why a convolutional code rather than Reed-Solomon: the watermark channel gives one
soft value per code bit with independent, Gaussian-like noise (no bursts; the
interleaving is done by the pattern layout), exactly what soft Viterbi decoding is
best at, and it needs no dependency. Why the CRC after it: a Viterbi decoder always
returns *some* message; the CRC (and the scrambling, which makes an all-zero or
constant picture decode to a message whose CRC fails) tells a decoded payload from
noise with probability 1 - 2^-16 per attempt.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

K = 7                                  # constraint length
GENERATORS = (0o133, 0o171, 0o165)     # LTE / 3GPP TS 36.212 rate-1/3 code
RATE_INV = len(GENERATORS)
ID_BITS = 32
CRC_BITS = 16
INFO_BITS = ID_BITS + CRC_BITS
CODE_BITS = (INFO_BITS + K - 1) * RATE_INV   # 162
_STATES = 1 << (K - 1)


def crc16(bits: np.ndarray) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of a bit sequence, MSB first."""
    reg = 0xFFFF
    for bit in np.asarray(bits, dtype=np.uint8):
        top = ((reg >> 15) & 1) ^ int(bit)
        reg = (reg << 1) & 0xFFFF
        if top:
            reg ^= 0x1021
    return reg


def int_to_bits(value: int, n: int) -> np.ndarray:
    return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.uint8)


def bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _parity(x: int) -> int:
    return bin(x).count("1") & 1


# Trellis tables. State = the last K-1 input bits, newest in the most significant position.
# From state s with input u: register r = (u << (K-1)) | s, outputs parity(r & g), next state r >> 1.
_NEXT = np.zeros((_STATES, 2), dtype=np.int64)
_OUT = np.zeros((_STATES, 2, RATE_INV), dtype=np.int8)   # expected code bits as +-1 (bit 0 -> +1)
for _s in range(_STATES):
    for _u in (0, 1):
        _r = (_u << (K - 1)) | _s
        _NEXT[_s, _u] = _r >> 1
        _OUT[_s, _u] = [1 - 2 * _parity(_r & g) for g in GENERATORS]
# Predecessors of each next state: for next state n, input u = n's MSB, and two previous states.
_PREV = np.zeros((_STATES, 2), dtype=np.int64)
_PREV_IN = np.zeros(_STATES, dtype=np.int64)
for _n in range(_STATES):
    _u = _n >> (K - 2)
    _PREV_IN[_n] = _u
    _low = (_n << 1) & (_STATES - 1)
    _PREV[_n] = [_low, _low | 1]
assert all(_NEXT[_PREV[n, j], _PREV_IN[n]] == n for n in range(_STATES) for j in (0, 1))
_PREV_OUT = np.stack([_OUT[_PREV[:, j], _PREV_IN] for j in (0, 1)], axis=1)  # (states, 2, rate) +-1


def conv_encode(info: np.ndarray) -> np.ndarray:
    """Zero-terminated encoding: len(info) + K - 1 steps, RATE_INV code bits (0/1) per step."""
    state = 0
    out = []
    for u in list(np.asarray(info, dtype=np.int64)) + [0] * (K - 1):
        out.extend((1 - _OUT[state, u]) // 2)
        state = int(_NEXT[state, u])
    return np.array(out, dtype=np.uint8)


def viterbi_decode(soft: np.ndarray, n_info: int) -> np.ndarray:
    """Soft-decision Viterbi for a zero-terminated code.

    `soft[i]` > 0 means code bit i is more likely 0, < 0 more likely 1; its magnitude is
    the reliability (a log-likelihood ratio, or anything proportional to one)."""
    soft = np.asarray(soft, dtype=np.float64).reshape(-1, RATE_INV)
    steps = soft.shape[0]
    if steps != n_info + K - 1:
        raise ValueError(f"expected {(n_info + K - 1) * RATE_INV} soft values, got {soft.size}")
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    decisions = np.zeros((steps, _STATES), dtype=np.int8)
    for t in range(steps):
        branch = _PREV_OUT @ soft[t]                       # (states, 2): correlation with each predecessor's output
        cand = metric[_PREV] + branch
        choice = np.argmax(cand, axis=1)
        decisions[t] = choice
        metric = cand[np.arange(_STATES), choice]
        if t >= n_info:                                     # tail: only input 0 is allowed
            metric[_PREV_IN == 1] = -np.inf
    state = 0
    bits = np.zeros(steps, dtype=np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = _PREV_IN[state]
        state = int(_PREV[state, decisions[t, state]])
    return bits[:n_info]


def encode_payload(wm_id: int, scramble: np.ndarray) -> np.ndarray:
    """32-bit id -> 162 code bits (0/1)."""
    if not 0 <= wm_id < 1 << ID_BITS:
        raise ValueError("watermark id must be a 32-bit unsigned integer")
    id_bits = int_to_bits(wm_id, ID_BITS)
    info = np.concatenate([id_bits, int_to_bits(crc16(id_bits), CRC_BITS)]) ^ scramble[:INFO_BITS]
    return conv_encode(info)


def decode_payload(soft: np.ndarray, scramble: np.ndarray) -> tuple[Optional[int], np.ndarray, np.ndarray]:
    """(id or None if the CRC fails, the re-encoded code bits of the decoded message,
    the decoded 48 payload bits whatever the CRC says)."""
    info = viterbi_decode(soft, INFO_BITS)
    reencoded = conv_encode(info)
    plain = info ^ scramble[:INFO_BITS]
    id_bits, crc_bits = plain[:ID_BITS], plain[ID_BITS:]
    if crc16(id_bits) != bits_to_int(crc_bits):
        return None, reencoded, plain
    return bits_to_int(id_bits), reencoded, plain
