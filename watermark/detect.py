"""Detection of the forensic watermark in a clip.

1. Accumulate. The mark is the same in every frame while the picture moves, so the
   luma of all frames is averaged (ClipAccumulator): the mark adds up coherently, the
   picture blurs. Frame rate changes and dropped/duplicated frames do not matter.
   Large clips are then shrunk to ~1.25x the canonical size (the mark's band is far
   below that Nyquist limit), so detection costs the same at any resolution.
2. Whiten. The average is spectrally whitened (each FFT coefficient divided by the
   mean magnitude around it: the picture's 1/f spectrum is flattened, the mark's
   lines stay), then divided by its local RMS so no busy region dominates.
3. Period candidates. A crop keeps the tile period (in pixels) and only shifts the
   tile; a rescale changes the period. So the period is searched, not the position:
   - peaks of the autocorrelation of the whitened image, ranked by how well the whole
     2-D lattice of peaks is present (finds any scale or aspect change when the mark
     is strong enough), and
   - a grid around the nominal period for the clip's size (exact if the whole picture
     was rescaled): x0.97..x1.36 (up to ~26 % cropped away) in 0.8 % steps, with
     +-2 and 4 % anisotropy;
   - only if nothing is found there: x0.3..x3 (the video letterboxed, or a window in a
     screen capture).
4. Fold and sync. For each candidate the whitened image is resampled to TILE px per
   period and averaged modulo the tile (a crop becomes a cyclic shift of the folded
   tile). Phase-only correlation with the key's pilots over every cyclic shift gives
   a z-score surface whose maximum is the sync statistic (its null distribution does
   not depend on the picture: see `sync`). The best few candidates are refined
   (anisotropic local search of the period, 1/4-pixel shift).
5. Decode. The pilots also give, per radius band, the channel's complex gain and its
   noise variance (like pilots in OFDM): each payload coefficient becomes a
   log-likelihood ratio for its code bit; soft Viterbi decoding, descrambling and the
   CRC-16 give the id, or nothing.

Statistics. Under no mark each (period, shift) hypothesis has sync z ~N(0,1); `sync_p`
is a conservative union bound over every hypothesis looked at (each period tried x
(TILE*UPSAMPLE)^2 shifts); a mark is declared present at z >= SYNC_PRESENT_Z (7.5:
above every clean trial of the benchmark). A decoded id passes the CRC by chance with
probability 2^-16 per decoding attempt (at most REFINE attempts per clip); the tracer
further requires the id to be one the registry issued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from . import ecc
from .pattern import CANONICAL_SIDE, RADIAL_BANDS, Pattern

UPSAMPLE = 4                   # sub-pixel resolution of the phase search
SYNC_PRESENT_Z = 7.5           # sync statistic above which a mark is declared present (payload read or not)
_MIN_PERIODS = 2.2             # the frame must hold at least this many tile periods along each axis


class ClipAccumulator:
    """Running mean of the luma of a clip's frames. A clip whose size changes midway (an
    encoder's resolution switch) is averaged per size; `mean` is that of the most frames."""

    def __init__(self) -> None:
        self._sums: dict[tuple[int, int], list] = {}

    def add(self, luma: np.ndarray) -> None:
        if luma.ndim == 3:
            luma = cv2.cvtColor(luma, cv2.COLOR_BGR2GRAY)
        entry = self._sums.get(luma.shape)
        if entry is None:
            entry = self._sums[luma.shape] = [np.zeros(luma.shape, np.float64), 0]
        entry[0] += luma
        entry[1] += 1

    @property
    def frames(self) -> int:
        """Frames of the size that is used."""
        return max((n for _, n in self._sums.values()), default=0)

    @property
    def skipped(self) -> int:
        return sum(n for _, n in self._sums.values()) - self.frames

    @property
    def mean(self) -> np.ndarray:
        if not self._sums:
            raise ValueError("no frames")
        total, n = max(self._sums.values(), key=lambda e: e[1])
        return (total / n).astype(np.float32)


@dataclass
class Candidate:
    period_x: float
    period_y: float
    source: str                      # where the candidate came from


@dataclass
class Detection:
    wm_id: Optional[int]             # decoded id whose CRC is valid, else None
    sync_z: float                    # peak of the pilot correlation, z-score
    sync_p: float                    # bound on P(sync_z this high | no mark), over all hypotheses tried
    present: bool                    # CRC valid, or sync_z >= SYNC_PRESENT_Z
    period: tuple[float, float]      # tile period found in the clip (px): scale = period / nominal
    shift: tuple[float, float]       # tile phase (canonical px)
    gain: list[float]                # per radius band, |channel gain| relative to the mean coefficient (diagnostic)
    code_ber: float                  # hard-decision code-bit errors vs the decoded codeword (NaN if no CRC)
    soft: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # code-bit LLRs
    payload_bits: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.uint8))  # decoded, CRC or not
    frames: int = 0
    candidates_tried: int = 0
    attempts: int = 0                # payload decoding attempts (each a 2^-16 chance of a false CRC)

    def ber_against(self, code_bits: np.ndarray) -> float:
        """Raw code-bit error rate (before error correction) against the true codeword (benchmarks, tests)."""
        if self.soft.size == 0:
            return 0.5
        return float(np.mean((self.soft < 0) != (np.asarray(code_bits) == 1)))

    def id_bit_errors(self, wm_id: int) -> int:
        """Wrong bits of the 32-bit id after error correction (benchmarks, tests)."""
        if self.payload_bits.size == 0:
            return ecc.ID_BITS
        return int(np.sum(self.payload_bits[: ecc.ID_BITS] != ecc.int_to_bits(wm_id, ecc.ID_BITS)))


# -- preprocessing ------------------------------------------------------------------------------------

def whiten(image: np.ndarray) -> np.ndarray:
    """Flatten the spectrum: every FFT coefficient over the mean magnitude of its neighbourhood."""
    img = image.astype(np.float64)
    img = img - img.mean()
    h, w = img.shape
    win = np.outer(np.hanning(h) ** 0.25, np.hanning(w) ** 0.25)   # soft edges: no cross-shaped leakage
    spec = np.fft.fft2(img * win)
    mag = np.abs(spec)
    k = max(3, int(round(min(h, w) / 60)) | 1)
    local = cv2.blur(np.fft.fftshift(mag).astype(np.float32), (k, k), borderType=cv2.BORDER_REFLECT)
    local = np.fft.ifftshift(local).astype(np.float64)
    spec /= local + 1e-9 * local.mean() + 1e-30
    spec[0, 0] = 0
    out = np.fft.ifft2(spec).real
    # equalise regions: a busy area should not outweigh the rest
    env = np.sqrt(cv2.GaussianBlur((out * out).astype(np.float32), (0, 0), max(4.0, min(h, w) / 40)))
    return (out / (env + 0.1 * env.mean() + 1e-30)).astype(np.float32)   # floor: black bars stay quiet


def _peaks_1d(profile: np.ndarray, lo: int, hi: int, n: int) -> list[tuple[float, float]]:
    """Up to n local maxima (sub-pixel lag, height) of profile[lo:hi+1], strongest first."""
    found = []
    for i in range(max(lo, 1), min(hi, len(profile) - 2) + 1):
        if profile[i] >= profile[i - 1] and profile[i] > profile[i + 1]:
            a, b, c = profile[i - 1], profile[i], profile[i + 1]
            den = a - 2 * b + c
            off = 0.5 * (a - c) / den if den < 0 else 0.0
            found.append((i + off, float(b)))
    found.sort(key=lambda t: -t[1])
    return found[:n]


def _refine_on_harmonics(profile: np.ndarray, period: float) -> float:
    """Use the farthest clear multiple of the period for a more precise estimate."""
    best = period
    k = 2
    while (k + 0.5) * period < len(profile) * 0.6:
        c = int(round(k * best))
        lo, hi = max(1, c - 2), min(len(profile) - 2, c + 2)
        i = lo + int(np.argmax(profile[lo:hi + 1]))
        if profile[i] <= 0 or not (profile[i] >= profile[i - 1] and profile[i] >= profile[i + 1]):
            break
        a, b, cc = profile[i - 1], profile[i], profile[i + 1]
        den = a - 2 * b + cc
        off = 0.5 * (a - cc) / den if den < 0 else 0.0
        best = (i + off) / k
        k += 1
    return best


def _lattice_score(acn: np.ndarray, px: float, py: float) -> float:
    """Mean normalised autocorrelation at the first lattice points of periods (px, py)."""
    h2, w2 = acn.shape
    vals = []
    for i, j in ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2)):
        lx, ly = i * px, j * py
        if abs(lx) > w2 // 2 * 0.7 or abs(ly) > h2 // 2 * 0.7:
            continue
        cx, cy = int(round(lx)), int(round(ly))
        patch = acn[np.arange(cy - 1, cy + 2) % h2][:, np.arange(cx - 1, cx + 2) % w2]
        vals.append(patch.max())
    return float(np.mean(vals)) if vals else -np.inf


def period_candidates(white: np.ndarray, tile: int, *, per_axis: int = 5, keep: int = 6) -> list[Candidate]:
    """Tile periods suggested by the autocorrelation, ranked by how well the whole 2-D
    lattice of peaks is there (found directly whatever the scale, when the mark is strong)."""
    h, w = white.shape
    spec = np.fft.rfft2(white, s=(2 * h, 2 * w))
    ac = np.fft.irfft2(spec * np.conj(spec), s=(2 * h, 2 * w))
    # unbiased: divide by the overlap at each lag
    ly = np.minimum(np.arange(2 * h), 2 * h - np.arange(2 * h))
    lx = np.minimum(np.arange(2 * w), 2 * w - np.arange(2 * w))
    overlap = np.maximum(h - ly, 1)[:, None] * np.maximum(w - lx, 1)[None, :]
    acn = ac / overlap
    acn /= np.std(acn[: h // 2, : w // 2]) + 1e-12
    ac_x = acn[0, :w] + acn[1, :w] + acn[-1, :w]
    ac_y = acn[:h, 0] + acn[:h, 1] + acn[:h, -1]
    nominal = tile * min(h, w) / CANONICAL_SIDE
    lo = max(10.0, 0.35 * nominal)
    xs = _peaks_1d(ac_x, int(lo), int(min(w / _MIN_PERIODS, 2.2 * nominal)), per_axis)
    ys = _peaks_1d(ac_y, int(lo), int(min(h / _MIN_PERIODS, 2.2 * nominal)), per_axis)
    scored = []
    for px, _ in xs:
        for py, _ in ys:
            if abs(math.log(px / py)) < 0.3:
                scored.append((_lattice_score(acn, px, py), px, py))
    scored.sort(key=lambda t: -t[0])
    return [Candidate(_refine_on_harmonics(ac_x, px), _refine_on_harmonics(ac_y, py), "autocorrelation")
            for _, px, py in scored[:keep]]


# -- fold, sync, decode ---------------------------------------------------------------------------------

def fold(white: np.ndarray, tile: int, period_x: float, period_y: float) -> np.ndarray:
    """Resample to `tile` px per period and sum modulo the tile (mean per tile pixel)."""
    fx, fy = tile / period_x, tile / period_y
    img = white
    if fx < 0.8 or fy < 0.8:  # shrinking: band-limit first
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.01, 0.4 / fx), sigmaY=max(0.01, 0.4 / fy))
    h, w = img.shape
    out_w, out_h = int(w * fx), int(h * fy)
    m = np.array([[fx, 0, 0], [0, fy, 0]], np.float64)
    res = cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    ny, nx = out_h // tile, out_w // tile
    if ny < 1 or nx < 1:
        raise ValueError("clip smaller than one tile")
    # whole tiles only (the frame's last partial row/column of tiles is dropped)
    return res[: ny * tile, : nx * tile].reshape(ny, tile, nx, tile).mean(axis=(0, 2))


@dataclass
class _Sync:
    z: float
    shift: tuple[float, float]
    spec: np.ndarray     # folded tile's spectrum
    positions: int       # shifts the peak was the maximum of


def sync(pattern: Pattern, folded: np.ndarray, upsample: int = UPSAMPLE) -> _Sync:
    """Phase-only correlation of the folded tile with the pilots over all cyclic shifts.

    Each pilot coefficient is reduced to its phase, so under no mark the surface is a sum
    of n random unit phasor pairs: ~N(0, 2n) at every shift, whatever the picture; it is
    scaled to a z-score with that known variance (not with the surface's own spread)."""
    p = pattern.tile
    spec = np.fft.fft2(folded)
    lay = pattern.layout
    pil = lay.pilot
    ky, kx = lay.ky[pil] % p, lay.kx[pil] % p
    obs = spec[ky, kx]
    cross = obs / (np.abs(obs) + 1e-30) * np.conj(lay.phase[pil])
    big = p * upsample
    z = np.zeros((big, big), complex)
    z[lay.ky[pil] % big, lay.kx[pil] % big] = cross
    z[(-lay.ky[pil]) % big, (-lay.kx[pil]) % big] = np.conj(cross)
    surface = np.fft.ifft2(z).real * (big * big / math.sqrt(2 * pil.sum()))
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    # positions: counted at the finest resolution any search uses (the maximum over a continuous
    # shift is higher than over integer shifts; this keeps sync_p conservative, see the benchmark)
    return _Sync(float(surface[iy, ix]), (ix / upsample, iy / upsample), spec, (p * UPSAMPLE) ** 2)


def _soft_bits(pattern: Pattern, spec: np.ndarray, shift: tuple[float, float]) -> tuple[np.ndarray, list[float]]:
    p = pattern.tile
    lay = pattern.layout
    dx, dy = shift
    vals = spec[lay.ky % p, lay.kx % p] * np.exp(2j * np.pi * (lay.kx * dx + lay.ky * dy) / p)
    llr = np.zeros(ecc.CODE_BITS)
    gains = []
    ref = np.abs(spec[lay.ky % p, lay.kx % p]).mean() + 1e-12
    for b in range(RADIAL_BANDS):
        pil = lay.pilot & (lay.band == b)
        s = lay.phase[pil] * pattern.pilot_gain
        g = np.sum(vals[pil] * np.conj(s)) / np.sum(np.abs(s) ** 2)     # complex channel gain
        noise = np.mean(np.abs(vals[pil] - g * s) ** 2) + 1e-12           # complex noise variance
        gains.append(float(abs(g) / ref))
        pay = ~lay.pilot & (lay.band == b)
        h = g * lay.phase[pay]
        np.add.at(llr, lay.code_bit[pay], 4 * np.real(vals[pay] * np.conj(h)) / noise)
    return llr, gains


COARSE_STEP = 0.008                     # relative step of the period grid (the fold tolerates ~+-0.5 %)
CROP_RANGE = (0.97, 1.36)               # period / nominal searched first: no crop .. 26 % cropped away
ANISOTROPY = (1.0, 0.98, 1.02, 0.96, 1.04)
WIDE_RANGE = (0.3, 3.0)                 # then, if nothing was found: the video inside a bigger/smaller frame
PRESCALE_ABOVE = 1.25
REFINE = 3                              # best coarse candidates refined and decoded


def _grid(lo: float, hi: float) -> np.ndarray:
    return np.exp(np.arange(math.log(lo), math.log(hi) + 1e-9, COARSE_STEP))


def _coarse(pattern: Pattern, white: np.ndarray,
            periods: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """(z, px, py) of every period pair that fits the clip, integer-ish shifts only."""
    out = []
    for px, py in periods:
        try:
            out.append((sync(pattern, fold(white, pattern.tile, px, py), upsample=2).z, px, py))
        except ValueError:
            continue
    return out


def _refine(pattern: Pattern, white: np.ndarray, px: float, py: float) -> tuple[_Sync, float, float, int]:
    """Local search of (px, py) on the sync statistic, then the final sync at full sub-pixel resolution."""
    best = sync(pattern, fold(white, pattern.tile, px, py), upsample=2)
    evaluated = 1
    for step in (0.004, 0.0015, 0.0006):
        improved = True
        while improved:
            improved = False
            for ddx, ddy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)):
                qx, qy = px * (1 + ddx * step), py * (1 + ddy * step)
                try:
                    s2 = sync(pattern, fold(white, pattern.tile, qx, qy), upsample=2)
                except ValueError:
                    continue
                evaluated += 1
                if s2.z > best.z:
                    best, px, py, improved = s2, qx, qy, True
    return sync(pattern, fold(white, pattern.tile, px, py)), px, py, evaluated


def detect_image(pattern: Pattern, mean_luma: np.ndarray, *, frames: int = 1, wide: bool = True) -> Detection:
    """Detect in an accumulated (mean) luma image."""
    h, w = mean_luma.shape
    nominal = pattern.tile * min(h, w) / CANONICAL_SIDE
    pre = 1.0
    if nominal > PRESCALE_ABOVE * pattern.tile:   # big frames: work at ~1.25x canonical (the mark's band is far below)
        pre = PRESCALE_ABOVE * pattern.tile / nominal
        mean_luma = cv2.resize(mean_luma, (round(w * pre), round(h * pre)), interpolation=cv2.INTER_AREA)
        h, w = mean_luma.shape
        nominal *= pre
    white = whiten(mean_luma)
    periods = [(c.period_x, c.period_y) for c in period_candidates(white, pattern.tile)]
    periods += [(nominal * f * a, nominal * f) for f in _grid(*CROP_RANGE) for a in ANISOTROPY]
    coarse = _coarse(pattern, white, periods)
    hypotheses = len(coarse)
    if wide and (not coarse or max(coarse)[0] < SYNC_PRESENT_Z):
        wide_periods = [(nominal * f, nominal * f) for f in _grid(*WIDE_RANGE)
                        if not CROP_RANGE[0] <= f <= CROP_RANGE[1]]
        more = _coarse(pattern, white, wide_periods)
        hypotheses += len(more)
        coarse += more
    if not coarse:
        raise ValueError("clip too small to hold the watermark tile")
    coarse.sort(key=lambda t: -t[0])
    picked: list[tuple[float, float]] = []
    for _, px, py in coarse:   # the best few distinct candidates
        if all(abs(math.log(px / qx)) > 0.02 or abs(math.log(py / qy)) > 0.02 for qx, qy in picked):
            picked.append((px, py))
        if len(picked) == REFINE:
            break
    best = None
    attempts = 0
    for px, py in picked:
        s, px, py, n = _refine(pattern, white, px, py)
        hypotheses += n
        llr, gains = _soft_bits(pattern, s.spec, s.shift)
        wm_id, reencoded, plain = ecc.decode_payload(llr, pattern.layout.scramble)
        attempts += 1
        result = (wm_id is not None, s.z, s, px, py, llr, gains, wm_id, reencoded, plain)
        if best is None or result[:2] > best[:2]:
            best = result
        if wm_id is not None:
            break
    assert best is not None  # coarse is not empty, so its best candidate was picked and tried
    _, _, s, px, py, llr, gains, wm_id, reencoded, plain = best
    code_ber = float(np.mean((llr < 0) != (reencoded == 1))) if wm_id is not None else float("nan")
    # union bound over every (period, shift) hypothesis whose z we looked at
    sync_p = min(1.0, hypotheses * s.positions * 0.5 * math.erfc(s.z / math.sqrt(2)))
    return Detection(wm_id=wm_id, sync_z=s.z, sync_p=sync_p, present=wm_id is not None or s.z >= SYNC_PRESENT_Z,
                     period=(float(px / pre), float(py / pre)), shift=s.shift, gain=gains, code_ber=code_ber,
                     soft=llr, payload_bits=plain, frames=frames, candidates_tried=hypotheses, attempts=attempts)


def detect_frames(pattern: Pattern, frames) -> Detection:
    """Detect in an iterable of BGR or luma frames."""
    acc = ClipAccumulator()
    for f in frames:
        acc.add(f)
    return detect_image(pattern, acc.mean, frames=acc.frames)
