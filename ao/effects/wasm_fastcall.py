"""Lean calls across the component boundary for the few signatures every message crosses, for wasmtime-py 50.

wasmtime-py converts component values generically: each export call and each host import asks the C API for
the function's type, walks it, and converts every value through several Python objects. For a ledger transfer
that was ~35 µs per export call and ~70 µs per state read, more than the module's own work. The signatures a
message crosses most are fixed by our WIT world: ``handle(string, string) -> string`` and the state and log
imports (``get(string) -> option<string>``, ``set(string, string)``, ``delete(string)``, ``write(string)``).
For those, values are read and written here directly in the C layout of ``wasmtime_component_val_t`` (a kind
byte, then the payload at offset 8; a string is a byte vector ``{size, data}``), and everything else keeps the
library's path. The layout is checked when this module loads (``layout_supported``); if it differs, nothing
here is used and the library's conversions run instead. ``tests/ao/test_cu.py`` checks both paths give the
same results and errors.

Errors keep the library's protocol: a Python exception in an import is parked in ``wasmtime.component._enter``
and re-raised when the export call returns, exactly as ``enter_wasm`` does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import _enter

VAL_SIZE = 32
PAYLOAD = 8  # offset of the value's payload (the union) in wasmtime_component_val_t
_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
_BOOL = ffi.WASMTIME_COMPONENT_BOOL.value

_dll = ffi.dll
# Our own function objects (indexing makes new ones; attribute access would share, and retype, the library's).
_vec_new = _dll["wasm_byte_vec_new"]
_vec_new.restype = None
_vec_new.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_val_new = _dll["wasmtime_component_val_new"]
_val_new.restype = ctypes.c_void_p
_val_new.argtypes = [ctypes.c_void_p]
_val_delete = _dll["wasmtime_component_val_delete"]
_val_delete.restype = None
_val_delete.argtypes = [ctypes.c_void_p]
_func_call = _dll["wasmtime_component_func_call"]
_func_call.restype = ctypes.c_void_p
_func_call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                       ctypes.c_size_t]
_post_return = _dll["wasmtime_component_func_post_return"]
_post_return.restype = ctypes.c_void_p
_post_return.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_add_func = _dll["wasmtime_component_linker_instance_add_func"]
_add_func.restype = ctypes.c_void_p
_add_func.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_void_p]
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t)
_u8_at = ctypes.c_uint8.from_address
_size_at = ctypes.c_size_t.from_address
_ptr_at = ctypes.c_void_p.from_address
_string_at = ctypes.string_at


def layout_supported() -> bool:
    """Whether wasmtime's value layout is the one read and written here."""
    val = ffi.wasmtime_component_val_t
    return (ctypes.sizeof(val) == VAL_SIZE and val.of.offset == PAYLOAD
            and ctypes.sizeof(ffi.wasmtime_component_valkind_t) == 1
            and ffi.wasm_byte_vec_t.size.offset == 0 and ffi.wasm_byte_vec_t.data.offset == ctypes.sizeof(
                ctypes.c_size_t))


ENABLED = layout_supported()


def _raise(error_ptr: int) -> None:
    error = WasmtimeError._from_ptr(ctypes.cast(error_ptr, ctypes.POINTER(ffi.wasmtime_error_t)))
    _enter.maybe_raise_last_exn()
    raise error


def _put_bytes(address: int, raw: bytes) -> None:
    _u8_at(address).value = _STRING
    _vec_new(address + PAYLOAD, len(raw), raw)


def _get_string(address: int) -> str:
    size = _size_at(address + PAYLOAD).value
    return _string_at(_ptr_at(address + PAYLOAD + 8).value, size).decode("utf-8") if size else ""


class StringCall:
    """An export ``f(string, string) -> string`` of one instance, called without the generic conversions."""

    def __init__(self, func: Any, store: Any) -> None:
        self._func = ctypes.addressof(func._func)
        self._context = ctypes.cast(store._context(), ctypes.c_void_p).value
        # Zeroed: kind 0 is a bool, which owns nothing (wasmtime_component_val_delete leaves it alone).
        self._args = (ctypes.c_uint8 * (2 * VAL_SIZE))()
        self._result = (ctypes.c_uint8 * VAL_SIZE)()
        self._args_at = ctypes.addressof(self._args)
        self._result_at = ctypes.addressof(self._result)
        self._second: tuple[str, bytes] = ("", b"")  # the env: the same text for every message of a process

    def __call__(self, first: str, second: str) -> str:
        args, result = self._args_at, self._result_at
        raw = first.encode("utf-8")  # anything that can fail, before a value is written
        if self._second[0] is not second:
            self._second = (second, second.encode("utf-8"))
        _put_bytes(args, raw)
        _put_bytes(args + VAL_SIZE, self._second[1])
        try:
            error = _func_call(self._func, self._context, args, 2, result, 1)
            if error:
                _raise(error)
            if _u8_at(result).value != _STRING:
                raise WasmtimeError("the export returned something other than a string")
            return _get_string(result)
        finally:
            for owned in (args, args + VAL_SIZE, result):
                _val_delete(owned)
                _u8_at(owned).value = _BOOL  # owns nothing now: deleting it again is harmless

    def post_return(self) -> None:
        error = _post_return(self._func, self._context)
        if error:
            _raise(error)


def _callback(body: Callable[[int, int], None]) -> Any:
    """A C callback running body(args address, results address), with the library's error protocol."""

    def run(_idx: int, _context: int, _ty: int, args: int, _nargs: int, results: int, _nresults: int) -> int:
        try:
            body(args, results)
        except WasmtimeError as exc:
            return ctypes.cast(exc._consume(), ctypes.c_void_p).value or 0
        except Exception as exc:  # parked and re-raised after the export call, as the library does
            _enter.LAST_EXCEPTION = exc
            return ctypes.cast(WasmtimeError("python exception")._consume(), ctypes.c_void_p).value or 0
        return 0

    return _CALLBACK(run)


def string_to_option_string(fn: Callable[[str], str | None]) -> Any:
    """An import ``f(string) -> option<string>``."""

    def body(args: int, results: int) -> None:
        value = fn(_get_string(args))
        if value is None:
            _u8_at(results).value = _OPTION
            _ptr_at(results + PAYLOAD).value = None
            return
        raw = value.encode("utf-8")  # what can fail, before the result is written
        scratch = (ctypes.c_uint8 * VAL_SIZE)()
        _put_bytes(ctypes.addressof(scratch), raw)
        some = _val_new(ctypes.addressof(scratch))  # takes the string over
        _u8_at(results).value = _OPTION
        _ptr_at(results + PAYLOAD).value = some

    return _callback(body)


def strings_to_nothing(fn: Callable[..., None], arity: int) -> Any:
    """An import ``f(string, ...) -> ()`` taking `arity` strings."""

    def body(args: int, _results: int) -> None:
        fn(*(_get_string(args + i * VAL_SIZE) for i in range(arity)))

    return _callback(body)


def add_func(instance: Any, name: str, callback: Any, keep: list[Any]) -> None:
    """Define an import of a linker instance with a callback made here (kept alive in `keep`)."""
    raw = name.encode("utf-8")
    keep.append(callback)
    error = _add_func(ctypes.cast(instance.ptr(), ctypes.c_void_p).value, raw, len(raw),
                      ctypes.cast(callback, ctypes.c_void_p).value, None, None)
    if error:
        _raise(error)
