"""Skin observations per face region of a captured still: redness, pigmented spots, texture.

    .venv/bin/python -m media.processors.observations [IMAGE] [--size 1280x720] [--repeat 50] [--json]

The output is a JSON-ready report for the doctor — numbers that describe the photo,
labelled as observations, never a diagnosis. No thresholds for "too red" or "a lesion"
live here; the doctor judges, typically by comparing regions (left vs right cheek) or
visits (before vs after treatment).

Size: the face is resampled so that its length (landmark 10, top of the forehead, to
152, chin; measured in 3D so it does not shrink when the head turns) is WORK_FACE_LENGTH
pixels. The canonical MediaPipe face measures 17.7 cm there, so one working pixel is
~0.5 mm on an average adult face. All sizes below are fixed in working pixels, i.e.
fractions of the face, so a 4000-px still and a 720p frame of the same face give
comparable numbers. A face smaller than that in the photo is enlarged, which adds no
detail: texture roughness then reads low (see image.face_length_px).

Light: every measure depends on the light and the camera (white balance, exposure,
JPEG smoothing). Compare only photos taken under similar light. Each region reports its
mean L* (how brightly lit it is) and the frame reports its colour cast (grey-world
CIELAB a*, b*) so the reader can tell when two photos are not comparable.

Measures (CIELAB from sRGB, D65; L* 0..100):
- redness: mean a* of the region's pixels, specular highlights left out. a* (the green-red axis) is the
  usual camera/colorimeter correlate of erythema (Weatherall & Coombs, J Invest
  Dermatol 1992; Takiwaki, J Med Invest 1998); it rises with redness but also with a
  magenta colour cast, hence the cast in the report. (The alternative, the log-RGB
  erythema index of Dawson et al., Phys Med Biol 1980, needs linear reflectances that a
  white-balanced, tone-mapped phone picture does not give.)
- spots: places darker than the region's own skin around them. Background = median of
  L* over ~2 cm (median, so the spots themselves do not pull it down); a pixel is a spot
  candidate when L* - background is below the region's median residual by more than
  SPOT_K robust standard deviations (1.4826 MAD) and at least SPOT_MIN_CONTRAST L*.
  Connected candidates are spots when their area is within SPOT_AREA (fractions of the
  face length squared: ~2 to ~100 mm²) and they are blob-like, not lines (wrinkles,
  hairs), and do not touch the region's edge: there a dark patch is usually the shadow
  or edge of what lies beyond (hairline, brow, glasses, a fold). A spot's area is
  measured at half its own depth (like a full width at half maximum), so it does not
  depend on the noise threshold. Count and total area as a fraction of the region;
  darker means melanin, but also a shadow or a scab.
- roughness: standard deviation of a difference of Gaussians of L* (sigma 1 and 3
  working px: detail of ~0.5 to ~3 mm — fine lines, pores at high resolution, scaling)
  over the region, in L* units. Per pixel, so independent of the region's size; the
  fixed working scale makes it independent of the photo's resolution. Defocus, motion
  blur and strong JPEG compression lower it; sensor noise in dim light raises it.

Report: {"kind", "method_version", "disclaimer", "status": "ok" | "no-face",
"image": {"width", "height", "colour_cast": {"a", "b", "chroma"}, "face_length_px",
"work_face_length_px"}, "regions": {name: {...}}}. Per region: "status" ("ok";
"not-visible": too little of it in view; "overexposed": too little left outside
highlights), "area" (visible pixels / face length², falls as the region turns away or
leaves the frame), "facing" (1 = square on to the camera), and when "ok": "lightness"
(mean L*), "redness" (mean a*), "yellowness" (mean b*), "ita_deg" (skin-tone angle),
"highlights" and "saturated" (fractions of the region), "spots" {"count",
"area_fraction", "largest": up to MAX_LISTED_SPOTS of {"x", "y" (normalised frame
coordinates, like the landmarks), "diameter" (fraction of the face length),
"contrast" (L* below the skin around it)}}, "roughness" (L* units).

No face: the report is returned with "status": "no-face" and no regions (the frame's
colour cast is still there), so a capture without a face yields a clear, storable
answer instead of an exception in a worker thread.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from .face_landmarks import FaceLandmarks
from .image_quality import colour_cast
from .regions import REGIONS, region_facing, region_masks

KIND = "skin-observations"
METHOD_VERSION = "1"
DISCLAIMER = "Observations to support the doctor's review; not a diagnosis."

WORK_FACE_LENGTH = 360  # px from landmark 10 to 152 after resampling: ~0.5 mm per px
_TOP, _CHIN = 10, 152
_CROP_MARGIN = 0.05  # of the face length around the landmarks' box: room for the filters
EXCLUDE_MARGIN = 0.02  # of the face length (~3.5 mm) kept clear of eyes, brows and lips
MIN_REGION_AREA = 0.002  # of the face length squared (~60 mm²): less visible skin is not measured
_CLIPPED = 250  # 8-bit level at which a channel (or the luma: a highlight) has lost information

_BACKGROUND_SIZE = 41  # px (~2 cm) median window for the local skin tone around spots; odd
SPOT_K = 3.0
SPOT_MIN_CONTRAST = 4.0  # L* units below the surrounding skin
SPOT_AREA = (7e-5, 3e-3)  # of the face length squared: ~9 .. ~390 working px (~2 .. ~100 mm²)
_SPOT_MAX_ELONGATION = 3.0  # bounding-box side ratio; more is a line (wrinkle, hair)
_SPOT_MIN_FILL = 0.3  # area / bounding-box area; less is a diagonal line or a ring
MAX_LISTED_SPOTS = 20  # the report lists the largest; the count covers all

_DOG_SIGMAS = (1.0, 3.0)  # px at the working scale


@dataclass(frozen=True)
class WorkImage:
    """The face of one frame at the working scale, in CIELAB, with its region masks."""

    lab: np.ndarray  # float32 (h, w, 3): L* 0..100, a*, b*
    band: np.ndarray  # float32 (h, w): difference of Gaussians of L*, for roughness
    highlight: np.ndarray  # bool (h, w): specular, near-white: no skin colour or texture left
    saturated: np.ndarray  # bool (h, w): some channel at its maximum, so the colour is off
    masks: dict[str, np.ndarray]  # bool (h, w) per region
    points3d: np.ndarray  # (478, 3) landmarks in working px (depth too)
    origin: tuple[int, int]  # crop's top-left corner in frame px
    scale: float  # working px per frame px
    face_length_px: float  # in the frame


@dataclass(frozen=True)
class Spot:
    x: float  # centroid, working px
    y: float
    area: int  # working px, at half depth
    contrast: float  # L* units below the surrounding skin


def face_length(landmarks: FaceLandmarks) -> float:
    """Forehead-top to chin in frame px, in 3D (MediaPipe's z is in x units) so that
    yaw and pitch do not shorten it."""
    p = landmarks.normalized[[_TOP, _CHIN]].astype(np.float64) * (landmarks.width, landmarks.height, landmarks.width)
    return float(np.linalg.norm(p[0] - p[1]))


def work_image(bgr: np.ndarray, landmarks: FaceLandmarks) -> WorkImage:
    """Crop the face, resample it to the working scale, convert to CIELAB, build masks."""
    h, w = bgr.shape[:2]
    length = face_length(landmarks)
    scale = WORK_FACE_LENGTH / length
    pad = _CROP_MARGIN * length
    (x0, y0), (x1, y1) = landmarks.pixels.min(axis=0) - pad, landmarks.pixels.max(axis=0) + pad
    x0, y0 = min(max(int(x0), 0), w - 2), min(max(int(y0), 0), h - 2)
    x1, y1 = min(max(int(np.ceil(x1)), x0 + 2), w), min(max(int(np.ceil(y1)), y0 + 2), h)
    size = (max(2, round((x1 - x0) * scale)), max(2, round((y1 - y0) * scale)))
    # INTER_AREA averages when shrinking; when enlarging it is nearest-neighbour, whose
    # blocky steps would read as texture, so enlarge with INTER_CUBIC (linear would
    # soften what detail there is and lower roughness more than needed).
    crop = cv2.resize(bgr[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)  # float: real L*a*b* units

    # Landmarks -> working px; the crop boundary is at integer frame px, so no offset error.
    xy = (landmarks.pixels.astype(np.float64) - (x0, y0)) * (size[0] / (x1 - x0), size[1] / (y1 - y0))
    depth = landmarks.normalized[:, 2].astype(np.float64) * landmarks.width * scale
    masks = region_masks(xy, lab.shape[:2], depth=depth, margin_px=EXCLUDE_MARGIN * WORK_FACE_LENGTH)
    highlight = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) >= _CLIPPED
    saturated = cv2.max(cv2.max(crop[..., 0], crop[..., 1]), crop[..., 2]) >= _CLIPPED  # numpy's max(axis=2) is slow
    return WorkImage(lab, band_pass(lab[..., 0]), highlight, saturated, masks,
                     np.column_stack([xy, depth]), (x0, y0), scale, length)


def frame_region_masks(landmarks: FaceLandmarks) -> dict[str, np.ndarray]:
    """The regions as measured, at the analysed frame's resolution (for overlays, edits):
    same exclusions and margin as work_image, scaled to the frame."""
    depth = landmarks.normalized[:, 2].astype(np.float64) * landmarks.width
    return region_masks(landmarks.pixels, (landmarks.height, landmarks.width), depth=depth,
                        margin_px=EXCLUDE_MARGIN * face_length(landmarks))


def redness(lab: np.ndarray, pixels: np.ndarray) -> float:
    """Mean CIELAB a* over `pixels` (bool mask)."""
    return float(lab[..., 1][pixels].mean())


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    h, w = mask.shape
    return slice(max(y - pad, 0), min(y + bh + pad, h)), slice(max(x - pad, 0), min(x + bw + pad, w))


def local_contrast(lightness: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """L* minus its local median background, over the region's box (returned with it).
    Outside the region the box is filled with the region's median L*, so eyebrows,
    hair or background next to the region do not darken its background estimate."""
    box = _bbox(mask, _BACKGROUND_SIZE // 2)
    lum, m = lightness[box], mask[box]
    level = np.float32(np.median(lum[m]))
    filled = np.round(np.where(m, lum, level) * 2.55).astype(np.uint8)  # 8-bit: medianBlur's fast path; 0.4 L* steps
    # The background is smooth, so take the median at half resolution: 4x cheaper.
    half = cv2.resize(filled, ((filled.shape[1] + 1) // 2, (filled.shape[0] + 1) // 2), interpolation=cv2.INTER_AREA)
    half = cv2.medianBlur(half, _BACKGROUND_SIZE // 4 * 2 + 1)
    background = cv2.resize(half, filled.shape[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32) / 2.55
    return lum - background, box


def find_spots(lightness: np.ndarray, mask: np.ndarray) -> list[Spot]:
    """Dark blobs within `mask` relative to the skin around them (see the module doc)."""
    residual, (rows, cols) = local_contrast(lightness, mask)
    m = mask[rows, cols]
    values = residual[m]
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    cut = centre - max(SPOT_K * spread, SPOT_MIN_CONTRAST)
    candidates = m & (residual < cut)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    labels = cast(npt.NDArray[np.int32], labels)  # CV_32S: OpenCV's stubs say "integer or floating" of every Mat
    if n <= 1:
        return []

    # Border 0: a region cut by the frame's edge has an edge there too.
    edge = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0).astype(bool)
    at_edge = np.zeros(n, bool)
    at_edge[labels[edge & candidates]] = True
    depth = np.zeros(n, np.float32)  # each blob's deepest residual below the region's median
    np.minimum.at(depth, labels[candidates], residual[candidates] - centre)
    core = candidates & (residual - centre <= 0.5 * depth[labels])
    area = np.bincount(labels[core], minlength=n)
    yy, xx = np.nonzero(core)
    cx = np.bincount(labels[core], weights=xx, minlength=n)
    cy = np.bincount(labels[core], weights=yy, minlength=n)

    length2 = WORK_FACE_LENGTH ** 2
    lo, hi = SPOT_AREA[0] * length2, SPOT_AREA[1] * length2
    spots = []
    for k in range(1, n):
        bw, bh, blob = stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT], stats[k, cv2.CC_STAT_AREA]
        if at_edge[k] or not lo <= area[k] <= hi:
            continue
        if max(bw, bh) > _SPOT_MAX_ELONGATION * min(bw, bh) or blob < _SPOT_MIN_FILL * bw * bh:
            continue
        spots.append(Spot(cx[k] / area[k] + cols.start, cy[k] / area[k] + rows.start, int(area[k]), float(-depth[k])))
    return spots


def band_pass(lightness: np.ndarray) -> np.ndarray:
    """Difference of Gaussians of L*: the texture band (see the module doc)."""
    return cv2.GaussianBlur(lightness, (0, 0), _DOG_SIGMAS[0]) - cv2.GaussianBlur(lightness, (0, 0), _DOG_SIGMAS[1])


def roughness(band: np.ndarray, pixels: np.ndarray) -> float:
    """Standard deviation of the band-passed L* over `pixels` (bool mask)."""
    return float(band[pixels].std())


def _ita(lightness: float, b: float) -> float:
    """Individual typology angle (Chardon et al. 1991): skin tone from L* and b*, degrees."""
    return math.degrees(math.atan2(lightness - 50.0, b))


def observe_region(work: WorkImage, name: str, frame_size: tuple[int, int]) -> dict:
    """One region's entry of the report."""
    full = work.masks[name]
    area = int(np.count_nonzero(full))
    entry: dict = {
        "area": round(area / WORK_FACE_LENGTH ** 2, 4),  # of the face length squared: falls as it turns away
        "facing": round(region_facing(work.points3d, name), 2),
    }
    min_area = MIN_REGION_AREA * WORK_FACE_LENGTH ** 2
    if area < min_area:
        return {"status": "not-visible", **entry}
    # Everything below on the region's box (with room for the spot background): a few
    # times cheaper than whole-face arrays, and the same numbers.
    box = _bbox(full, _BACKGROUND_SIZE // 2)
    mask, lab = full[box], work.lab[box]
    skin = mask & ~work.highlight[box]
    n_skin = int(np.count_nonzero(skin))
    if n_skin < min_area:
        return {"status": "overexposed", **entry}
    lightness = float(lab[..., 0][skin].mean())
    b = float(lab[..., 2][skin].mean())
    spots = sorted(find_spots(lab[..., 0], mask), key=lambda s: s.area, reverse=True)
    return {
        "status": "ok",
        **entry,
        # Fractions of the region: highlights (left out of every measure) and pixels with
        # a channel at its maximum (kept, but their colour is off: redness reads low when red saturates).
        "highlights": round(1 - n_skin / area, 3),
        "saturated": round(float(np.count_nonzero(work.saturated[box][mask])) / area, 3),
        "lightness": round(lightness, 1),
        "redness": round(redness(lab, skin), 1),
        "yellowness": round(b, 1),
        "ita_deg": round(_ita(lightness, b), 1),
        "spots": {
            "count": len(spots),
            "area_fraction": round(sum(s.area for s in spots) / area, 4),
            "largest": [_spot_entry(s, work, box, frame_size) for s in spots[:MAX_LISTED_SPOTS]],
        },
        "roughness": round(roughness(work.band[box], skin), 2),
    }


def _spot_entry(spot: Spot, work: WorkImage, box: tuple[slice, slice], frame_size: tuple[int, int]) -> dict:
    """Centre in normalised frame coordinates (as the landmarks), diameter of the
    equal-area disc as a fraction of the face length, contrast in L* units."""
    x = (spot.x + box[1].start) / work.scale + work.origin[0]
    y = (spot.y + box[0].start) / work.scale + work.origin[1]
    return {"x": round(float(x / frame_size[0]), 4), "y": round(float(y / frame_size[1]), 4),
            "diameter": round(2 * math.sqrt(spot.area / math.pi) / WORK_FACE_LENGTH, 4),
            "contrast": round(spot.contrast, 1)}


def observe_skin(bgr: np.ndarray, landmarks: FaceLandmarks | None) -> dict:
    """The JSON-serialisable observation report of `bgr` (BGR uint8) given its face's
    landmarks (a FaceLandmarkDetector's, IMAGE mode for stills), or None for no face."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 BGR frame, got {bgr.dtype} {bgr.shape}")
    height, width = bgr.shape[:2]
    if landmarks is not None and (landmarks.width, landmarks.height) != (width, height):
        raise ValueError(f"landmarks are of a {landmarks.width}x{landmarks.height} frame, not {width}x{height}")
    cast = colour_cast(bgr)
    report: dict = {
        "kind": KIND,
        "method_version": METHOD_VERSION,
        "disclaimer": DISCLAIMER,
        "status": "ok" if landmarks is not None else "no-face",
        "image": {"width": width, "height": height,
                  "colour_cast": {"a": round(cast.a, 1), "b": round(cast.b, 1), "chroma": round(cast.chroma, 1)}},
        "regions": {},
    }
    if landmarks is None:
        return report
    work = work_image(bgr, landmarks)
    # Below WORK_FACE_LENGTH the face was enlarged: no detail was added, roughness reads low.
    report["image"].update(face_length_px=round(work.face_length_px), work_face_length_px=WORK_FACE_LENGTH)
    report["regions"] = {name: observe_region(work, name, (width, height)) for name in REGIONS}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Skin observation report of a still, and its cost.")
    parser.add_argument("image", nargs="?", help="photo to analyse (default: matplotlib's Grace Hopper portrait)")
    parser.add_argument("--size", help="WxH: scale the photo to this height and centre it on a canvas this size")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs of the observations (>= 1)")
    parser.add_argument("--json", action="store_true", help="print the report")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    from .face_landmarks import FaceLandmarkDetector, Mode  # only the CLI needs the model

    if args.image is None:
        import matplotlib.cbook
        args.image = str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    bgr = cv2.imread(args.image)
    if bgr is None:
        sys.exit(f"cannot read {args.image}")
    if args.size:
        width, height = map(int, args.size.split("x"))
        scale = height / bgr.shape[0]
        bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), height),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        pad = width - bgr.shape[1]
        if pad >= 0:
            bgr = cv2.copyMakeBorder(bgr, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REPLICATE)
        else:
            bgr = np.ascontiguousarray(bgr[:, -pad // 2:][:, :width])

    with FaceLandmarkDetector(mode=Mode.IMAGE) as detector:
        t0 = time.perf_counter()
        landmarks = detector.detect(bgr)
        detect_ms = (time.perf_counter() - t0) * 1000
    report = observe_skin(bgr, landmarks)  # warm-up
    times = []
    cpu0 = time.process_time()
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        observe_skin(bgr, landmarks)
        times.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (time.process_time() - cpu0) * 1000 / args.repeat
    if args.json:
        print(json.dumps(report, indent=2))
    print(f"{bgr.shape[1]}x{bgr.shape[0]}, face length {report['image'].get('face_length_px', '-')} px: "
          f"landmarks (IMAGE mode, first call) {detect_ms:.1f} ms; observations mean {statistics.fmean(times):.2f} ms, "
          f"p50 {np.percentile(times, 50):.2f}, max {max(times):.2f}, CPU {cpu_ms:.2f} ms/run over {args.repeat} runs",
          file=sys.stderr)


if __name__ == "__main__":
    main()
