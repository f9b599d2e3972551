"""WCAG 2.x contrast, computed from the colours a widget really paints: relative luminance
of an sRGB colour and the contrast ratio of two colours (4.5:1 is the minimum for text)."""
from __future__ import annotations


def luminance(colour) -> float:
    """Relative luminance of a QColor (WCAG 2.x)."""
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.red()) + 0.7152 * channel(colour.green()) + 0.0722 * channel(colour.blue())


def contrast_ratio(first, second) -> float:
    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
