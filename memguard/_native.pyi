# Type stub for the cffi-compiled module built from native/build_native.py.
from typing import Any

ffi: Any
lib: Any
