"""Forensic (invisible) watermark: the pattern both the embedder and the detector derive
from the secret key.

How it works
------------
The mark is a periodic tile of TILE x TILE pixels on a canonical frame whose shorter
side is CANONICAL_SIDE pixels (on a 1280x720 frame a tile is 128 px; on 640x360, 64 px),
repeated over the whole picture and the same in every frame, added to the luma only.
The tile is defined in the 2-D Fourier domain, like an OFDM symbol: the coefficients
whose radius lies in BAND (cycles per tile) each carry either

- a pilot (known value from the key): used by the detector to find the tile's phase
  (a crop only shifts it) and to measure, per radius band, how much of the mark
  survived (the channel gain) and how noisy it is (for soft decoding), or
- one code bit of the payload (+-1 times a key-derived phase), interleaved by the key.

Only mid-low spatial frequencies are used (BAND: periods of 4.7 to 26 canonical px, i.e.
9.5 to 51 px on a 720p frame): low enough to survive 500 kbit/s VP8/H.264 and a 50 %
downscale, high enough that the picture itself (whose energy falls with frequency)
interferes less. Every coefficient's phase is random under the key, so without the
key the tile is indistinguishable from band-limited noise. With the defaults the band
holds 278 coefficients: 111 pilots (~40 % of the mark's energy) and 167 payload ones.

Payload: watermark id (32 bits) + CRC-16, scrambled, rate-1/3 K=7 convolutional code
(watermark/ecc.py): 162 code bits, interleaved over the payload coefficients by the key (every
code bit once; the 5 spare coefficients repeat randomly chosen code bits).

See watermark/embed.py (texture-masked embedding, visible mark) and watermark/detect.py
(frame accumulation, period and phase search, soft decoding, statistics).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import ecc

CANONICAL_SIDE = 360        # the pattern's geometry is defined for a frame whose shorter side is this
TILE = 64                   # tile period, canonical pixels
BAND = (2.5, 13.5)          # coefficient radii used, cycles per tile
PILOT_SHARE = 0.4           # fraction of the band's coefficients that are pilots
PILOT_GAIN = 1.0            # pilot amplitude relative to a payload coefficient
RADIAL_BANDS = 3            # channel estimated separately for this many radius bands
VERSION = b"consult-sfu/watermark/v1"


def _rng(key: bytes, label: bytes) -> np.random.Generator:
    seed = hmac.new(key, VERSION + b"/" + label, hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(seed, "big"))


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key (recorded with every issued id, printed by the tracer)."""
    return hmac.new(key, VERSION + b"/key-id", hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class Layout:
    """Which Fourier coefficients of the tile carry what; all derived from the key."""

    ky: np.ndarray          # (n,) coefficient rows (may be negative), one of each +-k pair
    kx: np.ndarray          # (n,) coefficient columns (>= 0)
    radius: np.ndarray      # (n,) cycles per tile
    phase: np.ndarray       # (n,) key-derived phase of each coefficient (complex unit)
    pilot: np.ndarray       # (n,) bool
    code_bit: np.ndarray    # (n,) index of the code bit a payload coefficient carries (-1 for pilots)
    band: np.ndarray        # (n,) radial band 0..RADIAL_BANDS-1
    scramble: np.ndarray    # (INFO_BITS,) XORed onto the payload before encoding


class Pattern:
    """The key's tile design: layout, tiles for a given id, and the pilot template."""

    def __init__(self, key: bytes, *, tile: int = TILE, band: tuple[float, float] = BAND,
                 pilot_share: float = PILOT_SHARE, pilot_gain: float = PILOT_GAIN) -> None:
        if len(key) < 16:
            raise ValueError("the watermark key must be at least 16 bytes")
        self.key = key
        self.tile = tile
        self.band_limits = band
        self.pilot_gain = pilot_gain
        self.key_id = key_id(key)
        self.layout = self._make_layout(pilot_share)

    def _make_layout(self, pilot_share: float) -> Layout:
        p = self.tile
        grid_y, grid_x = np.meshgrid(np.arange(-p // 2 + 1, p // 2), np.arange(0, p // 2), indexing="ij")
        ky, kx = grid_y.ravel(), grid_x.ravel()
        half = (kx > 0) | ((kx == 0) & (ky > 0))            # one coefficient of each conjugate pair
        radius = np.hypot(ky, kx)
        keep = half & (radius >= self.band_limits[0]) & (radius <= self.band_limits[1])
        ky, kx, radius = ky[keep], kx[keep], radius[keep]
        n = len(ky)
        rng = _rng(self.key, b"layout")
        phase = np.exp(2j * np.pi * rng.random(n))
        order = rng.permutation(n)
        n_pilot = int(round(pilot_share * n))
        if n - n_pilot < ecc.CODE_BITS:
            raise ValueError(f"band too narrow: {n - n_pilot} payload coefficients for {ecc.CODE_BITS} code bits")
        pilot = np.zeros(n, bool)
        pilot[order[:n_pilot]] = True
        code_bit = np.full(n, -1)
        slots = order[n_pilot:]
        n_extra = len(slots) - ecc.CODE_BITS  # spare coefficients repeat distinct, randomly chosen code bits
        extra = (rng.choice(ecc.CODE_BITS, n_extra, replace=False) if n_extra <= ecc.CODE_BITS
                 else rng.integers(0, ecc.CODE_BITS, n_extra))
        code_bit[slots] = np.concatenate([rng.permutation(ecc.CODE_BITS), extra])
        # radial bands with equal numbers of pilots
        edges = np.quantile(radius[pilot], np.linspace(0, 1, RADIAL_BANDS + 1)[1:-1])
        band = np.searchsorted(edges, radius)
        scramble = _rng(self.key, b"scramble").integers(0, 2, ecc.INFO_BITS).astype(np.uint8)
        return Layout(ky, kx, radius, phase, pilot, code_bit, band, scramble)

    # -- spectra -----------------------------------------------------------------------------------

    def coefficients(self, wm_id: int) -> np.ndarray:
        """Complex value of every layout coefficient for this id (pilots included)."""
        lay = self.layout
        code = ecc.encode_payload(wm_id, lay.scramble)
        sign = np.where(lay.pilot, self.pilot_gain, 1.0 - 2.0 * code[np.maximum(lay.code_bit, 0)])
        return sign * lay.phase

    def spectrum(self, values: np.ndarray, size: int | None = None) -> np.ndarray:
        """A Hermitian `size` x `size` spectrum (default: the tile) holding `values` at the layout's coefficients."""
        size = size or self.tile
        spec = np.zeros((size, size), complex)
        lay = self.layout
        spec[lay.ky % size, lay.kx % size] = values
        spec[(-lay.ky) % size, (-lay.kx) % size] = np.conj(values)
        return spec

    def tile_image(self, wm_id: int, oversample: int = 1) -> np.ndarray:
        """The spatial tile (tile*oversample square, float32, unit RMS): exact band-limited interpolation."""
        size = self.tile * oversample
        img = np.fft.ifft2(self.spectrum(self.coefficients(wm_id), size)).real
        return (img / np.sqrt(np.mean(img ** 2))).astype(np.float32)

    def period_px(self, width: int, height: int) -> float:
        """Tile period in pixels of the pattern as embedded on a width x height frame."""
        return self.tile * min(width, height) / CANONICAL_SIDE

    @cached_property
    def pilot_spectrum(self) -> np.ndarray:
        lay = self.layout
        return self.spectrum(np.where(lay.pilot, lay.phase, 0))

