"""Chinese annotation labels are burned in completely (issue 17, item 13: "玻尿酸 1ml 苹果肌"
used to come out as " 1ml "): every character draws ink where the drawing spec puts the
text, in a frame and in an export, and a mixed label is its Chinese and Latin parts."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.render import render
from recorder.audit import Action, AuditLog
from recorder.export import export_recording
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.store import RecordingStore
from recorder.writer import RecordingWriter
from tests.annotate.test_render import blank, shapes

LABEL = "玻尿酸 1ml 苹果肌"   # hyaluronic acid 1 ml, apple of the cheek
HANZI = "玻尿酸苹果肌"
GREEN = "#00ff00"
F = 20                          # font size at 720 p (spec)


def ink(text: str, at: tuple[float, float] = (0.1, 0.1)) -> tuple[float, int]:
    """(glyph coverage in pixels, width of the inked columns) of a green label on black:
    the box is black on black, so the green channel is exactly the glyphs' coverage."""
    frame = render(blank(), shapes({"kind": "text", "at": list(at), "text": text, "color": GREEN}))
    assert not frame[..., [0, 2]].any()
    green = frame[..., 1].astype(np.float64) / 255
    columns = np.flatnonzero(green.any(axis=0))
    return float(green.sum()), int(np.ptp(columns)) + 1 if len(columns) else 0


def test_each_chinese_character_draws_a_full_width_glyph():
    for char in HANZI + "王医生":
        coverage, width = ink(char)
        assert coverage > 0.2 * F * F, (char, coverage)   # a hanzi at 20 px covers 90..170 px
        assert 0.75 * F <= width <= 1.05 * F, (char, width)


def test_chinese_text_inks_in_proportion_to_its_characters():
    coverage, width = ink(HANZI[:3])
    singles = sum(ink(char)[0] for char in HANZI[:3])
    assert singles > 0 and abs(coverage - singles) < 0.05 * singles
    assert 2.8 * F <= width <= 3.05 * F                  # three characters of one em each
    assert ink(HANZI)[0] > 1.7 * coverage                # six characters: about twice the ink


def test_a_mixed_label_is_drawn_completely():
    coverage, width = ink(LABEL)
    parts = [ink(part) for part in ("玻尿酸", "1ml", "苹果肌")]
    assert all(c > 0 for c, _ in parts)
    assert abs(coverage - sum(c for c, _ in parts)) < 0.05 * coverage
    assert width > sum(w for _, w in parts) + F / 2    # and the two spaces between them
    # the label stays inside its box: baseline and height from the spec hold for CJK too
    frame = render(blank(128), shapes({"kind": "text", "at": [0.1, 0.1], "text": LABEL, "color": GREEN}))
    box_h = round(1.2 * F) + 2 * round(0.3 * F)
    glyphs = np.flatnonzero(((frame[..., 1] > 150) & (frame[..., 0] < 60)).any(axis=1))
    assert glyphs.min() >= 72 + round(0.3 * F) - 1 and glyphs.max() < 72 + box_h


# -- in an export -------------------------------------------------------------------------------------------

W, H, FPS = 640, 360, 15


def record_with_labels(data_dir, labels: dict[str, list[float]]) -> str:
    """A one-second VP8 recording (mid-grey, 640x360) whose board holds `labels` from the start."""
    keys = KeyStore.open(data_dir, environ={}, create=True)
    audit = AuditLog.open(data_dir, environ={}, create=True)
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    for text, at in labels.items():
        board.apply("doctor", {"op": "add", "shape": {"kind": "text", "at": at, "text": text, "color": GREEN}})
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1",
                                   tracks=[TrackInfo("patient-video", "video", "VP8", 90000)])
    writer.write_event(0, {"type": "track-owner", "participant": {"id": "patient", "name": "P", "role": "patient"}})
    writer.write_event(0, {**board.snapshot(), "t_ms": 0})
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base, enc.framerate, enc.gop_size = fractions.Fraction(1, FPS), FPS, 30
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    grey = av.VideoFrame.from_ndarray(np.full((H, W, 3), 128, np.uint8), format="bgr24").reformat(format="yuv420p")
    for i in range(FPS):
        grey.pts = i
        for packet in enc.encode(grey):
            ms = int(packet.pts * 1000 / FPS)
            writer.write_frame("patient-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
    for packet in enc.encode(None):
        ms = int(packet.pts * 1000 / FPS)
        writer.write_frame("patient-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
    writer.close()
    return writer.id


@pytest.mark.slow
def test_an_export_burns_in_every_chinese_character(tmp_path):
    data_dir = tmp_path / "data"
    labels = {"玻尿酸": [0.1, 0.1], HANZI: [0.1, 0.5]}
    recording_id = record_with_labels(data_dir, labels)
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir, environ={}),
                           audit=AuditLog.open(data_dir, environ={}))
    out = tmp_path / "consultation.webm"
    export_recording(store.open_reader(recording_id, actor="cli:ops", purpose=Action.EXPORT), out)
    with av.open(str(out)) as container:
        image = [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])][-1]
    assert image.shape == (H, W, 3)

    def box(at: list[float], chars: int) -> tuple[slice, slice]:
        """The label's box (at 360 p: F = 10 px, padding 3 px) and 3 px around it (VP8 smears edges)."""
        x, y = round(at[0] * W), round(at[1] * H)
        return slice(y - 3, y + 18 + 3), slice(x - 3, x + chars * 10 + 6 + 3)

    green = (image[..., 1].astype(np.int16) - np.maximum(image[..., 0], image[..., 2])) > 60
    three, six = int(green[box(labels["玻尿酸"], 3)].sum()), int(green[box(labels[HANZI], 6)].sum())
    assert three > 3 * 30, three              # a hanzi at 10 px turns ~80 px green here
    assert 1.5 * three < six < 3 * three, (three, six)
    green[box(labels["玻尿酸"], 3)] = green[box(labels[HANZI], 6)] = False
    assert green.sum() < 10                   # and nowhere else
