"""What a rate check decides, and the fixed-window count that op budgets and the API's address
budget share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0


# One more in a fixed window's count (KEYS[1]), which expires ARGV[1] seconds after its first: an
# operation spent from a user's budget, an API request without credentials from an address.
WINDOW_COUNT_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""
