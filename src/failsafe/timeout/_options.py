"""A timeout's one parameter, checked once.

``seconds`` (or failsafe-py's ``timeout_secs``) has one default (None: disabled) and one check,
naming it; the C engine trusts what it is given. Unlike the other patterns' options, no object
is built: ``async with timeout(0.3):`` builds a policy per use, so the check returns the
checked value itself and costs one type test on the common path.
"""

from __future__ import annotations

from typing import Final

from failsafe._core import check_number

DEFAULT: Final = None  # disabled
_INT_SECONDS: Final = 2**53  # ints up to here convert to float exactly (no OverflowError)


def check_seconds(value: object, param: str) -> float | None:
    """seconds, checked: None disables, inf never expires, 0 expires at the first suspension
    (as asyncio.timeout)."""
    if type(value) is float and value >= 0:  # cheap (NaN fails >=)
        return value
    if type(value) is int and 0 <= value <= _INT_SECONDS:
        return float(value)
    checked = check_number(value, param, allow_none=True, allow_inf=True)
    return None if checked is None else float(checked)
