"""The node's GIL switch interval (decision 0033)."""

from __future__ import annotations

import sys

from realtime.interpreter_policy import gil_switch_interval_set


def test_the_switch_interval_is_set_and_the_previous_one_returned() -> None:
    original = sys.getswitchinterval()
    try:
        before = gil_switch_interval_set(milliseconds=0.5)
        assert before == original * 1000
        assert sys.getswitchinterval() == 0.0005
    finally:
        sys.setswitchinterval(original)
