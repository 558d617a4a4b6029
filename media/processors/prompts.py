"""The patient prompts: stable keys (what goes over the wire) and their translations.

Left/right always mean the patient's own left/right: unambiguous whether or not
their preview is mirrored.
"""

from __future__ import annotations

from enum import StrEnum


class Prompt(StrEnum):
    FACE_CAMERA = "face_camera"
    MOVE_CLOSER = "move_closer"
    MOVE_BACK = "move_back"
    MOVE_LEFT = "move_left"
    MOVE_RIGHT = "move_right"
    MOVE_UP = "move_up"
    MOVE_DOWN = "move_down"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    CHIN_UP = "chin_up"
    CHIN_DOWN = "chin_down"
    STRAIGHTEN = "straighten"
    MORE_LIGHT = "more_light"
    TOO_BRIGHT = "too_bright"
    COLOUR_CAST = "colour_cast"
    HOLD_STILL = "hold_still"
    PERFECT = "perfect"


DEFAULT_LANGUAGE = "en"

CATALOGUE: dict[str, dict[Prompt, str]] = {
    "en": {
        Prompt.FACE_CAMERA: "Please face the camera",
        Prompt.MOVE_CLOSER: "Move closer",
        Prompt.MOVE_BACK: "Move back a little",
        Prompt.MOVE_LEFT: "Move slightly left",
        Prompt.MOVE_RIGHT: "Move slightly right",
        Prompt.MOVE_UP: "Move slightly up",
        Prompt.MOVE_DOWN: "Move slightly down",
        Prompt.TURN_LEFT: "Turn slightly left",
        Prompt.TURN_RIGHT: "Turn slightly right",
        Prompt.CHIN_UP: "Lift your chin a little",
        Prompt.CHIN_DOWN: "Lower your chin a little",
        Prompt.STRAIGHTEN: "Straighten your head",
        Prompt.MORE_LIGHT: "More light please",
        Prompt.TOO_BRIGHT: "Too bright: turn away from the window",
        Prompt.COLOUR_CAST: "The light looks tinted: daylight or a white lamp works best",
        Prompt.HOLD_STILL: "Hold still",
        Prompt.PERFECT: "Perfect, hold still",
    },
    "zh": {
        Prompt.FACE_CAMERA: "请面向摄像头",
        Prompt.MOVE_CLOSER: "请靠近一点",
        Prompt.MOVE_BACK: "请稍微后退",
        Prompt.MOVE_LEFT: "请稍微向左移",
        Prompt.MOVE_RIGHT: "请稍微向右移",
        Prompt.MOVE_UP: "请稍微向上移",
        Prompt.MOVE_DOWN: "请稍微向下移",
        Prompt.TURN_LEFT: "请稍微向左转头",
        Prompt.TURN_RIGHT: "请稍微向右转头",
        Prompt.CHIN_UP: "请稍微抬起下巴",
        Prompt.CHIN_DOWN: "请稍微收低下巴",
        Prompt.STRAIGHTEN: "请把头摆正",
        Prompt.MORE_LIGHT: "光线太暗，请增加照明",
        Prompt.TOO_BRIGHT: "光线太亮：请避开窗户的强光",
        Prompt.COLOUR_CAST: "光线偏色：自然光或白光灯效果最好",
        Prompt.HOLD_STILL: "请保持不动",
        Prompt.PERFECT: "很好，请保持不动",
    },
}


def language_code(language: str) -> str:
    """The catalogue language for a BCP 47 tag ("zh-CN", "zh-Hans" -> "zh"); English if we lack it."""
    base = language.replace("_", "-").split("-")[0].lower()
    return base if base in CATALOGUE else DEFAULT_LANGUAGE


def prompt_text(prompt: Prompt, language: str = DEFAULT_LANGUAGE) -> str:
    return CATALOGUE[language_code(language)][prompt]
