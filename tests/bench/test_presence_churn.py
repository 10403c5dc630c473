"""Presence churn: every update a receiver should see is matched to a diff or counted lost."""

from __future__ import annotations

from bench.loadgen import LoadGenerator, SocketSpec
from bench.presence_match import PRESENCE_PERIOD, presence_match, presence_state, presence_token


def test_every_update_is_a_real_change_and_names_its_number() -> None:
    for n in range(3 * PRESENCE_PERIOD):
        state, following = presence_state(n), presence_state(n + 1)
        assert presence_token(state) == n % PRESENCE_PERIOD
        assert state["status"] != following["status"]
        assert state["battery"] // 5 != following["battery"] // 5  # another battery band: always told
        assert 20 <= state["battery"] <= 100
    assert presence_token({"status": "online", "battery": None}) is None  # a join's state
    assert presence_token({"status": "offline", "battery": 20}) is None


def test_each_update_is_matched_to_its_diff_with_its_latency() -> None:
    sent = [(5, 100.0, True), (6, 105.0, True), (7, 110.0, True)]
    receipts = [(100.02, 5), (105.03, 6), (110.5, 7)]

    match = presence_match(sent, receipts)

    assert (match.expected, match.delivered, match.lost, match.superseded) == (3, 3, 0, 0)
    assert [round(x, 3) for x in match.latencies] == [0.02, 0.03, 0.5]


def test_a_missing_diff_is_lost() -> None:
    sent = [(0, 10.0, True), (1, 15.0, True), (2, 20.0, True)]

    match = presence_match(sent, [(10.01, 0), (15.01, 1)])

    assert (match.expected, match.delivered, match.lost) == (3, 2, 1)


def test_a_newer_state_delivers_the_updates_it_merged_and_says_so() -> None:
    sent = [(0, 10.0, True), (1, 10.01, True), (2, 20.0, True)]

    # The server merged 0 and 1 into one diff (its 50 ms window); 2 came on its own.
    match = presence_match(sent, [(10.06, 1), (20.02, 2)])

    assert (match.delivered, match.lost, match.superseded) == (3, 0, 1)
    assert [round(x, 3) for x in match.latencies] == [0.06, 0.05, 0.02]


def test_old_states_and_refused_updates_are_not_counted_as_delivered() -> None:
    # A diff arriving before the update it seems to show was sent reflects an older update with
    # the same token (here: one not sent in this window at all), so it is unmatched.
    sent = [(51, 100.0, True), (52, 105.0, False)]
    receipts = [(99.0, 0), (100.01, 51 % PRESENCE_PERIOD), (100.02, 51 % PRESENCE_PERIOD)]

    match = presence_match(sent, receipts)

    assert (match.expected, match.delivered, match.lost) == (1, 1, 0)
    assert (match.unmatched, match.stale) == (1, 1)


def test_over_the_socket_viewers_get_every_update_and_a_missing_one_is_lost(ceiling_url: str) -> None:
    roles = ["planner", "photographer", "couple", "guest", "guest"]
    specs = [SocketSpec(member=n, token="-", topic="wedding:3", role=role) for n, role in enumerate(roles, 1)]
    sockets = LoadGenerator(ceiling_url, specs, workers=2)
    try:
        assert sockets.connect()["connected"] == 5
        sockets.reset()

        sent = sockets.presence(interval=0.2, seconds=0.6)  # 3 updates per member
        assert sum(len(log) for log in sent["sent"]["wedding:3"].values()) == 5 * 3
        figures = sockets.collect_presence(sent=sent["sent"], timeout=2.0)

        # 3 viewers (not the guests) x 5 members x 3 updates, each delivered once, on time.
        assert (figures["expected"], figures["delivered"], figures["lost"]) == (45, 45, 0)
        assert (figures["superseded"], figures["stale"], figures["unmatched"]) == (0, 0, 0)
        assert figures["unexpected"] == 0
        assert len(figures["latencies"]) == 45

        # An update the server never heard of (sent by nobody): every viewer must miss it.
        log = sent["sent"]["wedding:3"][4]
        n, at, _ = log[-1]
        log.append((n + 1, at + 0.01, True))
        figures = sockets.collect_presence(sent=sent["sent"], timeout=0.5)
        assert (figures["expected"], figures["delivered"], figures["lost"]) == (48, 45, 3)
    finally:
        sockets.close()
