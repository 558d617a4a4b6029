"""The font of text burned into video frames: annotation labels (annotate/render.py) and the
visible watermark's viewer label (watermark/embed.py), in exports, replays and
live `server` watermarks.

Latin text is drawn in DejaVu Sans (it ships with matplotlib). Each character DejaVu Sans
lacks (Chinese, Japanese, Korean) comes from a CJK font instead, so "玻尿酸 1ml 苹果肌" or
"王医生" render completely while Latin text keeps its look. The CJK font is WenQuanYi Micro
Hei, from the Debian package CJK_PACKAGE that scripts/setup.sh installs, found through
fontconfig (`fc-list :lang=zh-cn`) or at its Debian path; failing that, whatever installed
font covers Simplified Chinese (fontconfig's choice for sans-serif in zh-cn). Without one a
warning names the package. A character no font has is drawn as a box (matplotlib's Last
Resort font) and logged, never silently left out.

The fonts are opened once per process. FreeType faces are not thread-safe (exports may run
in threads), so every rasterisation holds one lock; callers cache the bitmaps they reuse.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font

logger = logging.getLogger(__name__)

CJK_PACKAGE = "fonts-wqy-microhei"
CJK_FAMILY = "WenQuanYi Micro Hei"
LATIN_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
_LAST_RESORT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "LastResortHE-Regular.ttf"
# where Debian puts fonts covering Simplified Chinese, for machines without fontconfig
DEBIAN_CJK_FONTS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),        # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),          # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
)
_FC_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FontFile:
    path: Path
    index: int = 0      # the face in a collection (.ttc)


def _open(font: FontFile) -> FT2Font:
    # face_index only when needed: older matplotlib (the declared range) has no such argument
    return FT2Font(str(font.path), face_index=font.index) if font.index else FT2Font(str(font.path))


def _fontconfig_cjk() -> Optional[FontFile]:
    """The installed font covering Simplified Chinese that fontconfig knows: WenQuanYi Micro
    Hei if present (the same look on every server), else fontconfig's own pick for sans-serif
    in zh-cn. Raises OSError or SubprocessError when fontconfig is unusable."""
    def run(*args: str) -> list[str]:
        done = subprocess.run(args, capture_output=True, text=True, timeout=_FC_TIMEOUT_S, check=True)
        return done.stdout.splitlines()

    fields = "%{file}\t%{index}\t%{family[0]}\n"
    found: dict[tuple[str, int], str] = {}
    for line in run("fc-list", "-f", fields, ":lang=zh-cn:outline=true"):
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[0].lower().endswith((".ttf", ".ttc", ".otf", ".otc")):
            found[(parts[0], int(parts[1]))] = parts[2]
    if not found:
        return None
    choice = next((key for key, family in sorted(found.items()) if family == CJK_FAMILY), None)
    if choice is None:
        picked = run("fc-match", "-f", "%{file}\t%{index}", "sans-serif:lang=zh-cn")
        parts = picked[0].split("\t") if picked else []
        if len(parts) == 2 and parts[1].isdigit() and (parts[0], int(parts[1])) in found:
            choice = (parts[0], int(parts[1]))
        else:
            choice = min(found)
    return FontFile(Path(choice[0]), choice[1])


def _simplified_chinese_face(path: Path) -> int:
    """The face of a collection meant for Simplified Chinese: Noto Sans CJK holds JP, KR,
    SC, TC and HK faces with different shapes for the same characters. Else the first."""
    faces = FT2Font(str(path)).num_faces
    for index in range(1, faces):
        if FT2Font(str(path), face_index=index).family_name.endswith(" SC"):
            return index
    return 0


def find_cjk_font() -> Optional[FontFile]:
    """A font file with Chinese characters: through fontconfig when it is installed, else at
    the known Debian paths. None when there is none."""
    try:
        found = _fontconfig_cjk()
        if found is not None:
            return found
    except (OSError, subprocess.SubprocessError) as error:
        logger.debug("fontconfig unusable (%s); looking for a CJK font at the Debian paths", error)
    for path in DEBIAN_CJK_FONTS:
        if path.is_file():
            return FontFile(path, _simplified_chinese_face(path))
    return None


class LabelFont:
    """DejaVu Sans with per-character fallback to `cjk`, then to boxes. Thread-safe."""

    def __init__(self, cjk: Optional[FontFile]) -> None:
        self.cjk = cjk
        primary = FT2Font(str(LATIN_FONT))
        covered = set(primary.get_charmap())
        fallbacks = []
        if cjk is not None:
            cjk_font = _open(cjk)
            covered.update(cjk_font.get_charmap())
            fallbacks.append(cjk_font)
        if _LAST_RESORT.is_file():
            last_resort = FT2Font(str(_LAST_RESORT))
            last_resort.set_charmap(0)  # its Unicode charmap is empty; the first one maps everything
            fallbacks.append(last_resort)
        # _fallback_list is how matplotlib's own font_manager.get_font chains fonts (private
        # API, but that function offers no face index before matplotlib 3.11, nor one chain
        # shared by all threads)
        self._font = FT2Font(str(LATIN_FONT), _fallback_list=fallbacks) if fallbacks else primary
        self._covered = frozenset(covered)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def missing(self, text: str) -> str:
        """The visible characters of `text` neither DejaVu Sans nor the CJK font has."""
        return "".join(dict.fromkeys(c for c in text if ord(c) not in self._covered and c.isprintable()
                                     and not c.isspace()))

    def render(self, text: str, size_px: float) -> tuple[np.ndarray, int]:
        """(coverage, uint8 0..255, as tall and wide as the glyphs' extent; baseline row as a
        pixel-edge offset from its top)."""
        missing = self.missing(text)
        with self._lock:
            new = "".join(c for c in missing if c not in self._warned)
            self._warned.update(new)
            font = self._font
            font.set_size(size_px, 72)  # at 72 dpi a point is a pixel
            font.set_text(text, 0.0)
            font.draw_glyphs_to_bitmap(antialiased=True)
            coverage = np.array(font.get_image())
            descent = round(font.get_descent() / 64)
        if new:
            hint = "" if self.cjk is not None else f"; install the Debian package {CJK_PACKAGE} (scripts/setup.sh does)"
            logger.warning("no font has %s (U+%s): drawn as boxes in burned-in text%s", new,
                           ", U+".join(f"{ord(c):04X}" for c in new), hint)
        # FT2Font leaves one spare row below the descent
        return coverage, coverage.shape[0] - descent - 1


@lru_cache(maxsize=1)
def label_font() -> LabelFont:
    """The process's burn-in font (looked up and opened on first use)."""
    cjk = find_cjk_font()
    if cjk is None:
        logger.warning("no font with Chinese characters found (fc-list :lang=zh-cn, %s): Chinese, Japanese and "
                       "Korean text burned into exports, replays and live watermarks is drawn as boxes; install the "
                       "Debian package %s (scripts/setup.sh does)", ", ".join(map(str, DEBIAN_CJK_FONTS)), CJK_PACKAGE)
    else:
        logger.info("burned-in text: DejaVu Sans, CJK characters from %s (face %d)", cjk.path, cjk.index)
    return LabelFont(cjk)


# FreeType faces must not be shared across fork() (one FT_Library), nor a lock a thread held then
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=label_font.cache_clear)
