"""The patient prompts: stable keys (what goes over the wire); their texts are in i18n/locales.

Left/right always mean the patient's own left/right: unambiguous whether or not
their preview is mirrored.
"""

from __future__ import annotations

from enum import StrEnum

from i18n import DEFAULT_LOCALE, text


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


DEFAULT_LANGUAGE = DEFAULT_LOCALE


def prompt_text(prompt: Prompt, language: str = DEFAULT_LANGUAGE) -> str:
    """The prompt as the patient reads it, in `language` (any tag; English if we lack it): the
    i18n catalogues' `prompt.<key>`."""
    return text(f"prompt.{prompt.value}", language)
