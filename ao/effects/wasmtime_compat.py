"""A fast path for handing bytes to a component (``list<u8>`` results of our imports), for wasmtime-py 50.

wasmtime-py converts a Python ``bytes`` into a component ``list<u8>`` one element at a time (a ctypes
pointer and a Python call per byte, ~1.5 µs each). Every fresh interpreter instance draws ~2.5 KB of
(deterministic) random bytes on its first call, and WeaveDrive reads hand up to 4 MiB: byte by byte that is
milliseconds to seconds. Here the value list is filled with numpy instead: each element is a 32-byte
``wasmtime_component_val_t`` whose kind byte (offset 0) is U8 and whose payload byte (offset 8) is the
value. The layout is checked when this module loads; if it is not the one expected, nothing is patched and
the library's own conversion is used. ``tests/ao/test_cu.py`` checks both paths give the component the
same bytes.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from wasmtime import _ffi as ffi
from wasmtime.component import _types

VAL_SIZE = 32  # sizeof(wasmtime_component_val_t) in wasmtime 50
PAYLOAD_OFFSET = 8
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_library_list_to_c = _types.ListType.convert_to_c


def layout_supported() -> bool:
    """Whether the C value layout is the one the fast path writes."""
    return (ctypes.sizeof(ffi.wasmtime_component_val_t) == VAL_SIZE
            and ffi.wasmtime_component_val_t.of.offset == PAYLOAD_OFFSET
            and ctypes.sizeof(ffi.wasmtime_component_valkind_t) == 1)


def _list_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, bytes) or not self._is_bytes():
        _library_list_to_c(self, store, val, ptr)
        return
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(val))
    if val:
        cells = (ctypes.c_uint8 * (VAL_SIZE * len(val))).from_address(ctypes.addressof(raw.data.contents))
        grid = np.frombuffer(cells, dtype=np.uint8).reshape(len(val), VAL_SIZE)
        grid[:, 0] = _U8
        grid[:, PAYLOAD_OFFSET] = np.frombuffer(val, dtype=np.uint8)
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def install() -> bool:
    """Use the fast path for bytes (idempotent); False when the layout is unknown and nothing was changed."""
    if not layout_supported():
        return False
    _types.ListType.convert_to_c = _list_to_c  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Back to the library's own conversion (for the equivalence test)."""
    _types.ListType.convert_to_c = _library_list_to_c  # type: ignore[method-assign]
