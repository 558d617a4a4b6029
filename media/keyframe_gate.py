"""Whether a starting video down-track may forward yet, and when it asks its source for a keyframe.

A subscriber cannot decode a video stream that starts on a delta frame, so a video
down-track that starts, switches source or layer, or resumes from a pause drops packets
until the first packet of a keyframe, and meanwhile asks its source for one again every
KEYFRAME_RETRY_S (a request or the keyframe answering it can be lost). Audio needs no
keyframe: its gate is always open.

Decisions only: the down-track asks the source and forwards (media/downtrack.py). It
consults the gate per packet only while it is not forwarding (its rewriter has no start
point): once open, the gate costs the per-packet path nothing.
"""

from __future__ import annotations

# How long a starting video down-track waits for a keyframe before asking again.
KEYFRAME_RETRY_S = 0.5

# admit()'s answers, (forward it, ask the source for a keyframe now): constants, so
# answering allocates nothing.
OPEN = (True, False)
DROP = (False, False)
DROP_AND_ASK = (False, True)


class KeyframeGate:
    __slots__ = ("_video", "waiting", "_asked_at")

    def __init__(self, *, video: bool) -> None:
        self._video = video
        self.waiting = video  # dropping packets until a keyframe starts
        # Never asked: the first packet dropped asks at once.
        self._asked_at = float("-inf")

    def reset(self, now: float) -> None:
        """The stream starts over (attached, switched, restarted, paused or resumed): video waits
        for a keyframe again. Counts as asked at `now`: whoever restarts it asks (or its source does
        on the switch), so the first retry is KEYFRAME_RETRY_S later."""
        self.waiting = self._video
        self._asked_at = now

    def admit(self, keyframe_start: bool, now: float) -> tuple[bool, bool]:
        """A packet for a down-track that is not forwarding yet; `keyframe_start`: it starts a
        keyframe. Returns (forward it, and the stream from it; ask the source for a keyframe now)."""
        if not self.waiting or keyframe_start:
            self.waiting = False
            return OPEN
        if now - self._asked_at > KEYFRAME_RETRY_S:
            self._asked_at = now
            return DROP_AND_ASK
        return DROP
