"""Each summary rule of configs/summary.md, on hand-computed cases."""
from __future__ import annotations

import main
from conftest import SUMMARY, rec

U = "45094d07-e2cf-11e4-9454-56847afe97{:02x}"  # canonical UUIDs: U.format(n)


def test_spec_example_records(run):
    """The two example records of configs/summary.md: an email (operator comes online later)."""
    r = run([
        '{"id":"45094d07-e2cf-11e4-9454-56847afe9799","from":"visitor5","type":"message",'
        '"site_id":"123","data":{"message":"Hi, how\'s it going"},"timestamp":1429026445}',
        '{"id":"53367bc7-e2cf-11e4-81da-56847afe9799","from":"operator1","type":"status",'
        '"site_id":"123","data":{"status":"online"},"timestamp":1429026448}',
    ])
    assert r.rc == 0
    assert r.out == "123,messages=0,emails=1,operators=1,visitors=1\n"


def test_two_site_example(run):
    """Two sites, out of order, with a duplicate: the shape of the original gist."""
    lines = [
        rec(U.format(1), "message", "124", "visitor9", 105),
        rec(U.format(2), "status", "123", "operator1", 100, "online"),
        rec(U.format(3), "message", "123", "visitor5", 101),
        rec(U.format(4), "message", "123", "visitor6", 99),     # before anyone is online
        rec(U.format(5), "status", "124", "operator2", 100, "online"),
        rec(U.format(6), "status", "124", "operator2", 110, "offline"),
        rec(U.format(7), "message", "124", "visitor9", 111),    # after offline: email
        rec(U.format(1), "message", "124", "visitor9", 105),    # duplicate
        rec(U.format(8), "status", "124", "operator3", 200, "offline"),
    ]
    r = run(lines)
    assert r.out == ("123,messages=1,emails=1,operators=1,visitors=2\n"
                     "124,messages=1,emails=1,operators=2,visitors=1\n")
    assert "1 duplicates skipped" in r.err


def test_status_at_same_time_applies_before_message(run):
    """Ties: a status at exactly t applies before a message at t."""
    r = run([rec(U.format(1), "message", "1", "v", 50),
             rec(U.format(2), "status", "1", "o", 50, "online")])
    assert r.out == "1,messages=1,emails=0,operators=1,visitors=1\n"


def test_offline_at_same_time_applies_before_message(run):
    """Ties: an offline at t makes a message at t an email."""
    r = run([rec(U.format(1), "status", "1", "o", 10, "online"),
             rec(U.format(2), "message", "1", "v", 50),
             rec(U.format(3), "status", "1", "o", 50, "offline")])
    assert r.out == "1,messages=0,emails=1,operators=1,visitors=1\n"


def test_tied_statuses_of_one_operator_apply_in_file_order(run):
    """Ties: the later line wins among one operator's statuses at the same time."""
    on_then_off = [rec(U.format(1), "status", "1", "o", 10, "online"),
                   rec(U.format(2), "status", "1", "o", 10, "offline"),
                   rec(U.format(3), "message", "1", "v", 20)]
    assert run(on_then_off).out == "1,messages=0,emails=1,operators=1,visitors=1\n"
    off_then_on = [rec(U.format(1), "status", "1", "o", 10, "offline"),
                   rec(U.format(2), "status", "1", "o", 10, "online"),
                   rec(U.format(3), "message", "1", "v", 20)]
    assert run(off_then_on).out == "1,messages=1,emails=0,operators=1,visitors=1\n"


def test_two_messages_at_same_time_both_count(run):
    """Ties: two different messages with the same timestamp both count."""
    r = run([rec(U.format(1), "message", "1", "v", 5), rec(U.format(2), "message", "1", "v", 5)])
    assert r.out == "1,messages=0,emails=2,operators=0,visitors=1\n"


def test_offline_before_online_changes_nothing(run):
    """An offline for an operator that is not online changes nothing."""
    r = run([rec(U.format(1), "status", "1", "a", 1, "offline"),
             rec(U.format(2), "status", "1", "b", 2, "online"),
             rec(U.format(3), "status", "1", "a", 3, "offline"),
             rec(U.format(4), "message", "1", "v", 4)])
    assert r.out == "1,messages=1,emails=0,operators=2,visitors=1\n"


def test_double_online_does_not_stack(run):
    """Repeated onlines do not stack: one offline takes the operator offline."""
    r = run([rec(U.format(1), "status", "1", "a", 1, "online"),
             rec(U.format(2), "status", "1", "a", 2, "online"),
             rec(U.format(3), "status", "1", "a", 3, "offline"),
             rec(U.format(4), "message", "1", "v", 4)])
    assert r.out == "1,messages=0,emails=1,operators=1,visitors=1\n"


def test_site_online_while_any_operator_online(run):
    """A site is online while at least one of its operators is."""
    r = run([rec(U.format(1), "status", "1", "a", 1, "online"),
             rec(U.format(2), "status", "1", "b", 2, "online"),
             rec(U.format(3), "status", "1", "a", 3, "offline"),
             rec(U.format(4), "message", "1", "v", 4),
             rec(U.format(5), "status", "1", "b", 5, "offline"),
             rec(U.format(6), "message", "1", "v", 6)])
    assert r.out == "1,messages=1,emails=1,operators=2,visitors=1\n"


def test_operators_of_other_sites_do_not_count(run):
    """Site state is per site: another site's operator does not make it online."""
    r = run([rec(U.format(1), "status", "2", "a", 1, "online"),
             rec(U.format(2), "message", "1", "v", 4)])
    assert r.out == ("1,messages=0,emails=1,operators=0,visitors=1\n"
                     "2,messages=0,emails=0,operators=1,visitors=0\n")


def test_same_operator_name_on_two_sites_is_two_operators(run):
    """An operator's state is per (site, from)."""
    r = run([rec(U.format(1), "status", "1", "a", 1, "online"),
             rec(U.format(2), "status", "2", "a", 2, "offline"),
             rec(U.format(3), "message", "1", "v", 3)])
    assert r.out == ("1,messages=1,emails=0,operators=1,visitors=1\n"
                     "2,messages=0,emails=0,operators=1,visitors=0\n")


def test_first_record_with_an_id_wins_even_if_content_differs(run):
    """Dedup: the first valid record with an id counts; later ones are ignored."""
    r = run([rec(U.format(1), "message", "1", "v1", 5),
             rec(U.format(1), "message", "2", "v2", 6),   # same id, other site
             rec(U.format(1), "status", "1", "o", 1, "online")])
    assert r.out == "1,messages=0,emails=1,operators=0,visitors=1\n"
    assert "2 duplicates skipped" in r.err


def test_invalid_record_does_not_claim_an_id(run):
    """Dedup: only a *valid* record claims its id."""
    r = run([rec(U.format(1), "message", "", "v1", 5),   # invalid: empty site_id
             rec(U.format(1), "message", "1", "v2", 6)])
    assert r.out == "1,messages=0,emails=1,operators=0,visitors=1\n"


def test_site_seen_only_in_duplicates_does_not_appear(run):
    """An ignored duplicate contributes nothing: a site named only by one does not appear."""
    r = run([rec(U.format(1), "message", "1", "v", 5),
             rec(U.format(1), "status", "2", "o", 1, "online")])   # duplicate id, site 2
    assert r.out == "1,messages=0,emails=1,operators=0,visitors=1\n"


def test_several_input_files_are_one_stream_in_order(tmp_path, capsys):
    """Several input files (here a glob, read in name order) are one stream: first id wins."""
    (tmp_path / "b.jsonl").write_text(rec(U.format(1), "status", "2", "o", 1, "online") + "\n")
    (tmp_path / "a.jsonl").write_text(rec(U.format(1), "message", "1", "v", 2) + "\n")
    rc = main.main(["-c", SUMMARY, "-f", str(tmp_path / "*.jsonl"),
                    "--state-dir", str(tmp_path / "state")])
    assert (rc, capsys.readouterr().out) == (0, "1,messages=0,emails=1,operators=0,visitors=1\n")


def test_ids_compare_as_strings(run):
    """An upper-case UUID and a non-UUID id are ids of their own, never merged."""
    lower = "45094d07-e2cf-11e4-9454-56847afe9799"
    r = run([rec(lower, "message", "1", "a", 1), rec(lower.upper(), "message", "1", "b", 2),
             rec("evt-1", "message", "1", "c", 3), rec("evt-1", "message", "1", "d", 4),
             rec(lower, "message", "1", "e", 5)])
    assert r.out == "1,messages=0,emails=3,operators=0,visitors=3\n"


def test_one_sender_can_count_as_operator_and_as_visitor(run):
    """operators= and visitors= are counted apart: a `from` sending both counts in each."""
    r = run([rec(U.format(1), "status", "1", "x", 1, "online"),
             rec(U.format(2), "message", "1", "x", 2),
             rec(U.format(3), "message", "1", "x", 3)])
    assert r.out == "1,messages=2,emails=0,operators=1,visitors=1\n"


def test_whitespace_only_strings_are_not_empty(run):
    """A non-empty string needs one character, so a single space is a valid id, from or site."""
    r = run([rec(" ", "message", " ", " ", 1)])
    assert r.out == " ,messages=0,emails=1,operators=0,visitors=1\n"
    assert r.rejects() == []


def test_status_only_site_appears_with_zeros(run):
    """A site with only status records appears with zero messages and visitors."""
    r = run([rec(U.format(1), "status", "9", "o", 1, "online")])
    assert r.out == "9,messages=0,emails=0,operators=1,visitors=0\n"


def test_integer_site_id_is_its_decimal_string(run):
    """site_id 123 and "123" are the same site."""
    r = run([rec(U.format(1), "status", 123, "o", 1, "online"),
             rec(U.format(2), "message", "123", "v", 2),
             rec(U.format(3), "message", 123, "w", 3),
             rec(U.format(4), "message", -7, "w", 3)])
    assert r.out == ("-7,messages=0,emails=1,operators=0,visitors=1\n"
                     "123,messages=2,emails=0,operators=1,visitors=2\n")


def test_integer_site_id_of_any_size_is_its_decimal_string(run):
    """An integer site_id beyond 64 bits is still exact: its decimal string."""
    big = 2 ** 70
    r = run([rec(U.format(1), "message", big, "v", 1),
             rec(U.format(2), "message", str(big), "w", 2)])
    assert r.out == "1180591620717411303424,messages=0,emails=2,operators=0,visitors=2\n"


def test_sites_sort_by_code_point(run):
    """Output is sorted by site_id in code-point order: "10" < "9", "Z" < "a"."""
    sites = ["9", "10", "a", "Z", "é", "_", "1"]
    r = run([rec(U.format(i), "message", s, "v", i) for i, s in enumerate(sites)])
    assert [line.split(",")[0] for line in r.out.splitlines()] == sorted(sites)
    assert r.out.splitlines()[0:3] == ["1,messages=0,emails=1,operators=0,visitors=1",
                                      "10,messages=0,emails=1,operators=0,visitors=1",
                                      "9,messages=0,emails=1,operators=0,visitors=1"]


def test_fractional_timestamps_order_exactly(run):
    """Fractional timestamps: a status at 10.5 is after a message at 10.25."""
    r = run([rec(U.format(1), "status", "1", "o", 10.5, "online"),
             rec(U.format(2), "message", "1", "v", 10.25),
             rec(U.format(3), "message", "1", "v", 10.5)])
    assert r.out == "1,messages=1,emails=1,operators=1,visitors=1\n"


def test_extra_fields_and_key_order_are_ignored(run):
    """Extra fields are ignored and key order does not matter."""
    line = ('{"timestamp":3,"extra":[1,{"x":null}],"data":{"status":"online","why":1},'
            '"site_id":"1","type":"status","from":"o","id":"x"}')
    r = run([line, rec(U.format(2), "message", "1", "v", 4)])
    assert r.out == "1,messages=1,emails=0,operators=1,visitors=1\n"


def test_message_data_is_not_checked(run):
    """A message's data may be anything, or missing."""
    r = run(['{"id":"a","from":"v","type":"message","site_id":"1","timestamp":1,"data":7}',
             '{"id":"b","from":"v","type":"message","site_id":"1","timestamp":2}'])
    assert r.out == "1,messages=0,emails=2,operators=0,visitors=1\n"
    assert r.rejects() == []


def test_empty_input_prints_nothing(run):
    """No valid records: no sites, empty stdout, exit 0."""
    r = run(b"")
    assert (r.rc, r.out) == (0, "")
    assert r.err == "sluice: 0 lines read, 0 records, 0 duplicates skipped; rejected 0 of 0 lines\n"


def test_timestamps_compare_as_doubles(run):
    """Timestamps compare as IEEE doubles: 2**53 + 1 and 2**53 are the same instant (a tie)."""
    r = run([rec(U.format(1), "status", "1", "o", 2 ** 53 + 1, "online"),
             rec(U.format(2), "message", "1", "v", 2 ** 53)])
    assert r.out == "1,messages=1,emails=0,operators=1,visitors=1\n"


def test_timestamps_that_are_not_round_decimals(run):
    """Any finite double works: 0.1 + 0.2 is after 0.3, and huge ranges are fine."""
    r = run([rec(U.format(1), "status", "1", "o", 0.30000000000000004, "online"),
             rec(U.format(2), "message", "1", "v", 0.3),
             rec(U.format(3), "message", "1", "v", 0.30000000000000004),
             rec(U.format(4), "status", "2", "o", -1e300, "online"),
             rec(U.format(5), "message", "2", "v", 1e300)])
    assert r.out == ("1,messages=1,emails=1,operators=1,visitors=1\n"
                     "2,messages=1,emails=0,operators=1,visitors=1\n")


def test_lexsort_fallback_gives_the_same_answer(run, monkeypatch):
    """The (group, time) composite key and its lexsort fallback agree."""
    import stages.site_timeline as ssr
    lines = [rec(U.format(1), "status", "1", "o", 10, "online"),
             rec(U.format(2), "status", "1", "o", 10, "offline"),
             rec(U.format(3), "status", "1", "p", 5, "online"),
             rec(U.format(4), "message", "1", "v", 10),
             rec(U.format(5), "status", "1", "p", 10, "offline"),
             rec(U.format(6), "message", "1", "v", 11)]
    expected = run(lines).out
    monkeypatch.setattr(ssr, "COMPOSITE_LIMIT", 0)
    assert run(lines).out == expected == "1,messages=0,emails=2,operators=2,visitors=1\n"
