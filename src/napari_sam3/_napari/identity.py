"""Stable identity of napari layers: a uid in ``layer.metadata``, and unwrapped plugin proxies.

napari hands a plugin widget a ``PublicOnlyProxy`` viewer, and ``viewer.layers[...]`` returns a NEW
proxy object on every access, so neither ``id(layer)`` nor ``is`` identifies a layer there. Prompt,
candidate and result layers therefore name their image by a uid kept in the image's metadata
(`layer_uid`), and the widget works on the unwrapped viewer (`unwrap`) so the layer objects it keeps
are the real ones.
"""

from __future__ import annotations

import uuid
import weakref

UID_KEY = "sam3_uid"

# uid -> the layer that owns it: napari's "Duplicate layer" copies metadata, so a copy arrives with
# its original's uid and must get its own.
_owners: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def unwrap(obj):
    """The object behind napari's plugin proxies (``__wrapped__`` chain); ``obj`` otherwise."""
    while True:
        inner = getattr(obj, "__wrapped__", None)
        if inner is None or inner is obj:
            return obj
        obj = inner


def layer_uid(layer) -> str:
    """This layer's uid, created on first use and kept in ``layer.metadata``."""
    layer = unwrap(layer)
    meta = layer.metadata
    uid = meta.get(UID_KEY) if isinstance(meta, dict) else None
    owner = _owners.get(uid) if uid else None
    if uid and (owner is None or owner is layer):
        _owners[uid] = layer
        return uid
    uid = uuid.uuid4().hex
    if isinstance(meta, dict):
        meta[UID_KEY] = uid  # in place: no event, nothing for the user to see
    else:
        layer.metadata = {UID_KEY: uid}
    _owners[uid] = layer
    return uid


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same napari layer (proxies or not)."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def find_layer(viewer, uid: str | None):
    """The layer of ``viewer`` with this uid (unwrapped), or None."""
    if not uid:
        return None
    for layer in viewer.layers:
        meta = layer.metadata
        if isinstance(meta, dict) and meta.get(UID_KEY) == uid and layer_uid(layer) == uid:
            return unwrap(layer)
    return None


def in_viewer(viewer, layer) -> bool:
    """Whether ``layer`` (the object itself) is one of ``viewer``'s layers."""
    if layer is None:
        return False
    layer = unwrap(layer)
    return any(unwrap(ly) is layer for ly in viewer.layers)
