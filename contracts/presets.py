"""The demo sources' contracts shipped with the platform (`contracts/presets/*.json`)."""

from __future__ import annotations

from pathlib import Path

import orjson

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEMO_SOURCES = ("web-chat", "ios-app", "android-app", "slack-bot", "voice-assistant", "llm-gateway")


def preset_load(source_name: str) -> dict:
    return orjson.loads((PRESET_DIR / f"{source_name}.json").read_bytes())


def demo_presets() -> list[dict]:
    return [preset_load(name) for name in DEMO_SOURCES]
