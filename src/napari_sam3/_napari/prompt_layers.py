"""The Points (clicks) and Shapes (boxes) layers that carry prompts, with a positive/negative sign.

Each prompt layer shares the image layer's geometry and number of dimensions, so its data coordinates
are the image's pixel coordinates (row, col; plus the slice index in nD). The sign of each click or
box is the categorical feature ``sign`` (``positive`` / ``negative``); the colour follows it (green /
magenta). New prompts take the layer's ``feature_defaults``, which the toggle key flips.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from napari_sam3._napari.identity import layer_uid, unwrap
from napari_sam3._napari.layers import PlaneRef, full_geometry

SIGNS = ("positive", "negative")
SIGN_COLORS = {"positive": "#00ff00", "negative": "#ff00ff"}
ROLE_KEY = "sam3_prompt"  # metadata key naming a prompt layer's role and image

TOGGLE_KEY = "n"
CYCLE_KEY = "c"
COMMIT_KEY = "k"


def _sign_features() -> dict:
    return {"sign": pd.Categorical([], categories=list(SIGNS))}


def find_prompt_layer(viewer, role: str, image_layer):
    """The ``role`` ("clicks" / "boxes") prompt layer made for ``image_layer``, or None."""
    uid = layer_uid(image_layer)
    for layer in viewer.layers:
        meta = layer.metadata.get(ROLE_KEY) if isinstance(layer.metadata, dict) else None
        if meta and meta.get("role") == role and meta.get("image_uid") == uid:
            if layer.ndim == image_layer.ndim:
                return unwrap(layer)
    return None


def make_clicks_layer(viewer, image_layer, ref: PlaneRef):
    """Add a Points layer for clicks on ``image_layer`` (or return the existing one)."""
    found = find_prompt_layer(viewer, "clicks", image_layer)
    if found is not None:
        return found
    size = max(4.0, 0.012 * max(ref.shape))
    layer = viewer.add_points(
        np.zeros((0, ref.ndim)),
        ndim=ref.ndim,
        name=f"{image_layer.name} clicks",
        features=_sign_features(),
        feature_defaults={"sign": "positive"},
        face_color="sign",
        face_color_cycle=dict(SIGN_COLORS),
        border_color="white",
        border_width=0.15,
        size=size,
        metadata={ROLE_KEY: {"role": "clicks", "image_uid": layer_uid(image_layer)}},
        **full_geometry(ref),
    )
    layer.mode = "add"
    return layer


def make_boxes_layer(viewer, image_layer, ref: PlaneRef):
    """Add a Shapes layer for rectangles on ``image_layer`` (or return the existing one)."""
    found = find_prompt_layer(viewer, "boxes", image_layer)
    if found is not None:
        return found
    layer = viewer.add_shapes(
        None,
        ndim=ref.ndim,
        name=f"{image_layer.name} boxes",
        features=_sign_features(),
        feature_defaults={"sign": "positive"},
        edge_color="sign",
        edge_color_cycle=[SIGN_COLORS[s] for s in SIGNS],
        edge_width=max(1.0, 0.004 * max(ref.shape)),
        face_color="transparent",
        metadata={ROLE_KEY: {"role": "boxes", "image_uid": layer_uid(image_layer)}},
        **full_geometry(ref),
    )
    layer.mode = "add_rectangle"
    return layer


def current_sign(layer) -> str:
    sign = layer.feature_defaults["sign"].iloc[0] if len(layer.feature_defaults) else "positive"
    return str(sign) if sign in SIGNS else "positive"


def set_sign(layer, sign: str) -> None:
    """Make new prompts ``sign``; prompts selected in select mode switch to it too.

    In add mode napari keeps the prompt just placed selected; it keeps its sign (toggling is about
    the next click, not the one already made).
    """
    layer.feature_defaults = {"sign": sign}
    selected = sorted(layer.selected_data) if str(layer.mode) == "select" else []
    if selected:
        features = layer.features.copy()
        features.loc[selected, "sign"] = sign
        layer.features = features
    layer.refresh_colors()


def toggle_sign(layer) -> str:
    """Flip the sign of new (and selected) prompts; returns the new sign."""
    sign = "negative" if current_sign(layer) == "positive" else "positive"
    set_sign(layer, sign)
    return sign


def signs_of(layer) -> list[str]:
    if "sign" not in layer.features:
        return ["positive"] * len(layer.data)
    return [str(s) if s in SIGNS else "positive" for s in layer.features["sign"]]


def bind_prompt_keys(
    layer,
    on_toggle: Callable[[str], None] | None,
    on_cycle: Callable[[], None],
    on_commit: Callable[[], None],
) -> None:
    """Bind N (toggle sign), C (next candidate) and K (commit) on a prompt layer."""

    def _toggle(lyr):
        sign = toggle_sign(lyr)
        if on_toggle is not None:
            on_toggle(sign)

    layer.bind_key(TOGGLE_KEY, _toggle, overwrite=True)
    layer.bind_key(CYCLE_KEY, lambda lyr: on_cycle(), overwrite=True)
    layer.bind_key(COMMIT_KEY, lambda lyr: on_commit(), overwrite=True)


def unbind_prompt_keys(layer) -> None:
    """Remove the keys `bind_prompt_keys` added (the widget that handled them is gone)."""
    for key in (TOGGLE_KEY, CYCLE_KEY, COMMIT_KEY):
        try:
            layer.bind_key(key, None)
        except (KeyError, ValueError):
            pass


SHORTCUTS_TEXT = (
    "Enter (in the concept box): run\n"
    f"{TOGGLE_KEY.upper()} (on a clicks/boxes layer): toggle positive / negative\n"
    f"{CYCLE_KEY.upper()} (on a prompt or candidate layer): next candidate\n"
    f"{COMMIT_KEY.upper()} (on a prompt or candidate layer): commit candidate as a new label\n"
    "Ctrl+Z (on the target Labels layer): undo the commit"
)
