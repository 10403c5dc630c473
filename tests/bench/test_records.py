"""The shared-records scenario's plan and counting: what each member is owed comes from the replies."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bench import records, report, report_docs
from bench.loadgen import LoadGenerator, SocketSpec
from bench.worker import _Incoming

COUPLE, PLANNER, PHOTOGRAPHER, CATERER, OFFICIANT, GUEST = 1, 2, 3, 4, 5, 6
EVERYONE = frozenset({COUPLE, PLANNER, PHOTOGRAPHER, CATERER, OFFICIANT, GUEST})
WEDDING: dict[str, Any] = {
    "id": 9,
    "members": [
        {"member": COUPLE, "role": "couple", "token": "-"},
        {"member": PLANNER, "role": "planner", "token": "-"},
        {"member": PHOTOGRAPHER, "role": "photographer", "token": "-"},
        {"member": CATERER, "role": "caterer", "token": "-"},
        {"member": OFFICIANT, "role": "officiant", "token": "-"},
        {"member": GUEST, "role": "guest", "token": "-"},
    ],
    "timeline": [
        {"id": 10, "version": 1, "assigned_vendors": [PHOTOGRAPHER]},
        {"id": 11, "version": 3, "assigned_vendors": [CATERER, OFFICIANT]},
    ],
}


def _timeline() -> records.Timeline:
    return records.Timeline.of(WEDDING)


def _edit(n: int, member: int, item: int, base: int, *, measured: bool = True, **reply: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "n": n,
        "member": member,
        "item": item,
        "base": base,
        "conflicting": False,
        "measured": measured,
    }
    row.update({"sent": 100.0 + n, "status": "ok", "reply_seconds": 0.01 * (n + 1), **reply})
    return row


def test_the_timeline_knows_audiences_editors_and_the_publish_plans_to() -> None:
    timeline = _timeline()

    assert timeline.topic == "wedding:9"
    assert timeline.editors == [COUPLE, PLANNER, PHOTOGRAPHER, CATERER]  # not the officiant, not the guest
    # Every role may view the timeline by default, so every item reaches everyone, assigned or not.
    assert records.VIEWING_ROLES == records.ROLES
    assert timeline.audiences[10] == timeline.audiences[11] == EVERYONE
    assert timeline.to[11] == [f"role:{role}" for role in sorted(records.ROLES)]
    assert timeline.versions == {10: 1, 11: 3}


def test_every_tenth_edit_is_stale_against_someone_elses_newest_write() -> None:
    state = records.EditState.of({10: 1, 11: 3}, seed=1)
    editors = [COUPLE, PLANNER]
    plain = [records.next_edit(state, editors=editors) for _ in range(9)]
    state.learn(item=11, version=4, author=COUPLE, changed=["notes"])
    state.learn(item=10, version=2, author=PLANNER, changed=["title"])

    tenth = records.next_edit(state, editors=editors)  # n = 9: PLANNER's turn

    assert not any(e.conflicting for e in plain)
    assert [e.member for e in plain[:3]] == [COUPLE, PLANNER, COUPLE]
    assert all(e.base == {10: 1, 11: 3}[e.item] for e in plain)
    # PLANNER's own newest write is skipped: the stale base is the version before COUPLE's.
    assert (tenth.conflicting, tenth.item, tenth.field, tenth.base) == (True, 11, "notes", 3)


def test_a_stale_edit_falls_back_to_a_plain_one_while_nobody_else_wrote() -> None:
    state = records.EditState.of({10: 1}, seed=1)
    state.next_n = 9
    state.learn(item=10, version=2, author=PLANNER, changed=["title"])

    edit = records.next_edit(state, editors=[PLANNER])

    assert (edit.conflicting, edit.base) == (False, 2)


def test_sync_frames_change_one_field_and_publish_frames_carry_the_send_time_and_audience() -> None:
    edit = records.Edit(n=7, member=PLANNER, item=11, field="notes", base=3, conflicting=False)

    sync = records.edit_frame(edit, mode="sync", topic="wedding:9", to=["role:planner"], sent=5.25)
    publish = records.edit_frame(edit, mode="publish", topic="wedding:9", to=["role:planner"], sent=5.25)

    assert sync["changes"] == {"notes": "note 7 by member 2"}
    assert (sync["id"], sync["base_version"], sync["op_id"]) == (11, 3, "bench-2-7")
    assert publish["data"] == {"text": "sent 5.250000"}
    assert publish["to"] == ["role:planner"]


def test_an_accepted_write_is_owed_to_its_items_audience_and_its_author() -> None:
    edits = [
        _edit(0, CATERER, 10, 1, outcome="applied", version=2, changed=["notes"], lost=[], seq=40),
        _edit(1, PLANNER, 11, 3, outcome="applied", version=4, changed=["title"], lost=[], seq=42),
    ]

    expected = records.records_expected(edits, timeline=_timeline(), mode="sync")

    for member in EVERYONE:
        assert expected.events[member] == {(10, 2), (11, 4)}, member
    assert expected.sent_at[(11, 4)] == 101.0
    assert expected.notices == {}


def test_notices_go_to_the_overridden_author_and_to_whoever_a_win_overwrote() -> None:
    edits = [
        _edit(0, PHOTOGRAPHER, 10, 1, measured=False, version=2, changed=["title"], lost=[]),
        _edit(1, CATERER, 10, 2, version=3, changed=["notes"], lost=[]),
        # Stale against version 1: the couple outranks the photographer on the title they both set.
        _edit(2, COUPLE, 10, 1, outcome="merged", version=4, changed=["title"], lost=[]),
        # Stale again: the caterer loses the title to the couple.
        _edit(3, CATERER, 10, 3, outcome="overridden", version=4, changed=[], lost=["title"]),
    ]

    expected = records.records_expected(edits, timeline=_timeline(), mode="sync")

    assert expected.notices == {
        PHOTOGRAPHER: {("overwritten", 10, 4)},  # not the caterer: its notes were not contested
        CATERER: {("overridden", 10, 4)},
    }
    assert (10, 2) not in expected.events.get(PHOTOGRAPHER, set())  # the warm-up's writes are not owed
    assert (10, 4) in expected.events[PHOTOGRAPHER]
    assert expected.notices_unknown == 0


def test_a_write_since_the_base_that_went_unanswered_makes_its_notices_unknown() -> None:
    edits = [
        _edit(0, PHOTOGRAPHER, 10, 1, status="unanswered"),
        _edit(1, COUPLE, 10, 1, outcome="merged", version=3, changed=["title"], lost=[]),
    ]

    expected = records.records_expected(edits, timeline=_timeline(), mode="sync")

    assert expected.notices_unknown == 1
    assert expected.notices == {}


def test_a_publish_is_owed_by_its_seq_to_the_same_audience() -> None:
    edits = [_edit(0, CATERER, 10, 1, outcome="published", seq=40), _edit(1, PLANNER, 11, 3, status="rate_limited")]

    expected = records.records_expected(edits, timeline=_timeline(), mode="publish")

    assert expected.events == {member: {40} for member in EVERYONE}
    assert expected.sent_at == {40: 100.0}


def test_receipts_count_delivered_lost_duplicated_and_unexpected() -> None:
    owed = {(10, 2), (10, 3), (11, 4)}
    receipts = [((10, 2), 100.5), ((10, 2), 100.6), ((12, 9), 100.7), ((11, 4), 101.25)]

    match = records.records_match(owed, receipts, {(10, 2): 100.0, (11, 4): 101.0})

    assert (match.expected, match.delivered, match.lost) == (3, 2, 1)
    assert (match.duplicates, match.unexpected) == (1, 1)
    assert match.latencies == [0.5, 0.25]


def _incoming(**fields: Any) -> _Incoming:
    return msgspec.convert({"op": "event", **fields}, _Incoming)


def test_receipts_are_keyed_by_write_notice_or_seq() -> None:
    updated = _incoming(seq=5, type="record.updated", data={"id": 10, "version": 3, "values": {}})
    notice = _incoming(seq=6, type="record.conflict", data={"reason": "overwritten", "id": 10, "version": 3})
    chat = _incoming(seq=7, type="chat.message", data={"text": "sent 1"})

    assert records.receipt_key(updated) == ("event", (10, 3))
    assert records.receipt_key(notice) == ("notice", ("overwritten", 10, 3))
    assert records.receipt_key(chat) == ("event", 7)
    assert records.receipt_key(_incoming(seq=8, type="vendor.status", data={})) is None


def test_a_hidden_field_shown_to_a_role_without_ceremony_details_is_a_leak() -> None:
    shown = _incoming(seq=5, type="record.updated", data={"values": {"ceremony_notes": "vows"}, "changed": []})
    listed = _incoming(seq=5, type="record.conflict", data={"fields": ["ceremony_notes"]})
    withheld = _incoming(seq=5, type="record.updated", data={"values": {"notes": "x"}, "changed": ["notes"]})
    caterer, photographer = (
        SocketSpec(CATERER, "-", "wedding:9", role="caterer"),
        SocketSpec(3, "-", "w", role="photographer"),
    )

    assert records.leaks(caterer, shown) and records.leaks(caterer, listed)
    assert not records.leaks(caterer, withheld)
    assert not records.leaks(photographer, shown)


def test_edit_figures_count_outcomes_and_reply_times_of_measured_edits_only() -> None:
    edits = [
        _edit(0, COUPLE, 10, 1, measured=False, outcome="applied"),
        *[_edit(n, COUPLE, 10, 1, outcome="applied") for n in range(1, 9)],
        _edit(9, COUPLE, 10, 1, outcome="merged", conflicting=True),
        _edit(10, COUPLE, 10, 1, status="rate_limited", error="Too many changes"),
        _edit(11, COUPLE, 10, 1, status="unanswered", reply_seconds=None),
    ]

    figures = records.edit_figures(edits)

    assert figures["edits_sent"] == 11
    assert figures["conflicting_sent"] == 1
    assert figures["outcomes"] == {"applied": 8, "merged": 1, "rate_limited": 1, "unanswered": 1}
    assert figures["refusals"] == ["rate_limited: Too many changes", "unanswered: "]
    assert figures["replies"] == 10
    assert (figures["reply_ms_p50"], figures["reply_ms_max"]) == (70.0, 110.0)


@pytest.mark.parametrize(
    ("kind", "modes"), [("product", ["sync", "publish"]), ("ceiling", ["publish"]), ("baseline", [])]
)
def test_which_plans_each_server_runs(kind: str, modes: list[str]) -> None:
    assert records.modes_for(kind) == modes


def test_the_publish_plan_reaches_each_items_audience(ceiling_url: str) -> None:
    timeline = _timeline()
    specs = [
        SocketSpec(m["member"], "-", timeline.topic, publisher=m["member"] in timeline.editors, role=m["role"])
        for m in WEDDING["members"]
    ]
    editors = LoadGenerator(ceiling_url, [s for s in specs if s.publisher], workers=1)
    others = LoadGenerator(ceiling_url, [s for s in specs if not s.publisher], workers=1)
    try:
        assert editors.connect()["connected"] == 4
        assert others.connect()["connected"] == 2
        editors.reset(records=True)
        others.reset(records=True)

        edits = editors.records_edit(timeline=timeline.wire(), mode="publish", rate=20, seconds=0.5, measured=True)
        expected = records.records_expected(edits, timeline=timeline, mode="publish")
        a = editors.collect_records(expected=expected, timeout=2.0)
        b = others.collect_records(expected=expected, timeout=2.0)

        assert len(edits) == 10
        assert all(e["status"] == "ok" and e["reply_seconds"] is not None for e in edits)
        assert a["expected"] + b["expected"] == sum(len(v) for v in expected.events.values()) > 10
        assert (a["lost"] + b["lost"], a["duplicates"] + b["duplicates"]) == (0, 0)
        assert b["expected"] == 2 * len(edits)  # the guest and the officiant: every item's publishes
        assert b["unexpected"] == 0
        assert len(a["latencies"]) + len(b["latencies"]) == a["delivered"] + b["delivered"]
    finally:
        editors.close()
        others.close()


def _phase(reply_p99: float, cpu: float) -> dict[str, Any]:
    return {
        "edits_sent": 600,
        "outcomes": {"applied": 540, "merged": 60},
        "refusals": [],
        "reply_ms_p50": reply_p99 / 2,
        "reply_ms_p99": reply_p99,
        "server_cpu_us_per_edit": cpu,
        "lost": 0,
        "duplicates": 0,
    }


def _records_results() -> dict[str, Any]:
    connect = {"connected": 200, "sockets": 200, "editors": 29}
    run = {
        "product": {**connect, "sync": _phase(40.0, 3000.0), "publish": _phase(10.0, 1000.0)},
        "ceiling": {**connect, "publish": _phase(2.0, 100.0)},
        "baseline": {"not_run": "no audiences"},
    }
    return {"records": {"runs": [run]}}


def test_the_report_compares_the_engine_with_the_ceiling_and_with_its_own_publishes() -> None:
    summary = report.summarise(_records_results())["records"]

    assert set(summary["medians"]) == {"product", "ceiling"}  # the baseline did not run
    assert summary["medians"]["product"]["reply_ms_p99"] == 40.0  # the engine's, not the publishes'
    assert summary["ratios"]["reply_ms_p99 product/ceiling"]["median"] == 20.0
    assert summary["ratios"]["reply_ms_p99 sync/publish"]["median"] == 4.0
    assert summary["ratios"]["server_cpu_us_per_edit sync/publish"]["median"] == 3.0
    assert not summary["ratios"]["reply_ms_p99 sync/publish"]["higher_is_better"]
    assert not any("baseline" in ratio for ratio in summary["ratios"])


def test_the_report_writes_one_row_per_server_and_plan_and_names_what_did_not_run() -> None:
    results = _records_results()
    markdown = report_docs._scenario_markdown("records", results["records"], report.summarise(results))

    assert "| product | sync | 600 |" in markdown
    assert "| product | publish | 600 |" in markdown
    assert "| ceiling | publish | 600 |" in markdown
    assert "applied 540, merged 60" in markdown
    assert "baseline: not run (no audiences)" in markdown
    assert "| reply_ms_p99 sync/publish | 4.0 |" in markdown
