"""Host-side integer helpers for the kernels' launch code.

triton.cdiv and triton.next_power_of_2 go through Triton's constexpr-function wrapper: about 2 us a call on the CPU
here, and the GDN driver made about 30 such calls in a forward+backward, most of its own Python time (session 18).
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers."""
    return -(-a // b)


def np2(x: int) -> int:
    """The smallest power of two >= x (as triton.next_power_of_2 for x >= 1; 1 for x <= 1)."""
    return 1 << max(0, x - 1).bit_length()
