"""The passive watch is sans-IO: counters in, a suspicion out."""

from __future__ import annotations

from wanhooks.health import passive
from wanhooks.health.passive import Packets

PER_DAY = 1000.0


def feed(
    watch: passive.TrafficWatch, samples: list[tuple[float, Packets]]
) -> tuple[passive.TrafficWatch, list[float]]:
    fired = []
    for now, sample in samples:
        watch, fire = passive.observe(watch, sample, now, rtt=0.02, bursts_per_day=PER_DAY)
        if fire:
            fired.append(now)
    return watch, fired


def test_traffic_that_goes_unanswered_is_suspected_after_the_wait() -> None:
    watch = passive.start(Packets(100, 100, 0, 0), 0.0)
    # 10 packets out every 50 ms, nothing back
    samples = [(0.05 * i, Packets(100 + 10 * i, 100, 0, 0)) for i in range(1, 12)]
    watch, fired = feed(watch, samples)
    assert fired == [samples[5][0]]  # first packet at 0.05 s, suspected 0.25 s later
    assert watch.suspicions == 1 and 0.99 < passive.BUCKET_BURSTS - watch.tokens <= 1


def test_traffic_both_ways_is_never_suspected() -> None:
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    samples = [(0.05 * i, Packets(10 * i, 8 * i, 0, 0)) for i in range(1, 200)]
    _, fired = feed(watch, samples)
    assert fired == []


def test_the_far_ends_repeats_do_not_hide_a_way_out_that_died() -> None:
    """The way out dies, the way in does not (as the health lab's blackhole): the far ends
    repeat what was never acknowledged on their backoff, 0.2 s, then 0.4, 0.8, 1.6 s apart,
    each time as our clients repeat theirs -- 8 sent to 1 received in one sample, then a
    duplicate ack.  A repeat answers what waited before it, not the 8 sent with it: they are
    owed, and join the duplicate ack as it goes unanswered."""
    samples: list[tuple[float, Packets]] = []
    tx = rx = 0
    for i in range(1, 21):  # a second of echoes both ways
        tx, rx = tx + 20, rx + 10
        samples.append((0.05 * i, Packets(tx, rx, 0, 0)))
    repeats = {1.2, 1.4, 1.8, 2.6, 4.2}
    for i in range(21, 100):
        now = round(0.05 * i, 2)
        if now == 1.05:  # the clients' next requests: into the hole
            tx += 8
        if now in repeats:
            tx, rx = tx + 8, rx + 1
        elif round(now - 0.05, 2) in repeats:
            tx += 1  # the duplicate ack of the repeat
        samples.append((now, Packets(tx, rx, 0, 0)))
    _, fired = feed(passive.start(Packets(0, 0, 0, 0), 0.0), samples)
    # repeats at 1.2 and 1.4 s, the next only at 1.8: suspected 0.25 s after the duplicate
    # ack that followed the one at 1.4 (sent on average at 1.425)
    assert fired and 1.65 < fired[0] <= 1.7 + 1e-9, fired


def test_an_upload_acknowledged_sparsely_is_not_suspected() -> None:
    """Ten segments out for every ack in, then the upload ends: each ack answers what waited
    before its sample, and what went out with the last one asks nothing more."""
    samples = [(0.05 * i, Packets(10 * i, i, 0, 0)) for i in range(1, 1200)]
    samples += [(0.05 * i, Packets(11990, 1199, 0, 0)) for i in range(1200, 1210)]
    _, fired = feed(passive.start(Packets(0, 0, 0, 0), 0.0), samples)
    assert fired == []


def test_the_acks_of_a_download_that_came_in_few_large_packets_are_owed_nothing() -> None:
    """Receive offload merges a download's segments: 3 packets in, 66 acks out, then the
    page is read.  A request a second later, answered in the next sample, is no reason
    either, nor the next page's download."""
    samples = [(0.1, Packets(66, 3, 0, 0))] + [(0.1 * i, Packets(66, 3, 0, 0)) for i in range(2, 12)]
    samples += [(1.2, Packets(68, 3, 0, 0)), (1.3, Packets(68, 5, 0, 0)), (1.4, Packets(134, 8, 0, 0))]
    samples += [(0.1 * i, Packets(134, 8, 0, 0)) for i in range(15, 30)]
    _, fired = feed(passive.start(Packets(0, 0, 0, 0), 0.0), samples)
    assert fired == []


def test_our_own_probes_are_not_traffic() -> None:
    """Probes out and no answer (a lost echo) is the probes' business, not the watch's."""
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    samples = [(0.05 * i, Packets(2 * i, 0, 2 * i, 0)) for i in range(1, 40)]
    _, fired = feed(watch, samples)
    assert fired == []


def test_one_packet_or_a_lagging_counter_is_no_reason() -> None:
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    # our probe counted before the NIC's transmit completion: -1, then +1
    samples = [(0.05, Packets(0, 0, 1, 0)), (0.10, Packets(1, 0, 1, 0))]
    samples += [(0.05 * i, Packets(1, 0, 1, 0)) for i in range(3, 30)]
    _, fired = feed(watch, samples)
    assert fired == []


def test_a_one_way_stream_spends_only_the_burst_budget() -> None:
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    steps = int(3600 / 0.05)  # an hour of a send-only stream
    fired = 0
    for i in range(1, steps):
        watch, fire = passive.observe(
            watch, Packets(5 * i, 0, 0, 0), 0.05 * i, rtt=0.02, bursts_per_day=PER_DAY
        )
        fired += fire
    # the bucket's initial bursts plus an hour's refill, no more
    assert fired <= passive.BUCKET_BURSTS + PER_DAY / 24 + 1, fired


def test_the_wait_grows_with_the_round_trip() -> None:
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    samples = [(0.05 * i, Packets(5 * i, 0, 0, 0)) for i in range(1, 40)]
    fired = []
    for now, sample in samples:
        watch, fire = passive.observe(watch, sample, now, rtt=0.6, bursts_per_day=PER_DAY)
        if fire:
            fired.append(now)
    assert fired and fired[0] >= 0.05 + 1.2 - 1e-9  # two 600 ms round trips


def test_a_link_already_failed_or_being_checked_spends_nothing() -> None:
    watch = passive.start(Packets(0, 0, 0, 0), 0.0)
    for i in range(1, 200):  # ten seconds of unanswered traffic on a failed link
        watch, fire = passive.observe(
            watch, Packets(5 * i, 0, 0, 0), 0.05 * i, rtt=0.02, bursts_per_day=PER_DAY, armed=False
        )
        assert not fire
    assert watch.tokens == passive.BUCKET_BURSTS and watch.unanswered == 0


def test_an_answer_the_prober_has_not_read_yet_is_not_traffic_heard() -> None:
    """The kernel counts a probe's answer before the prober reads it, or the prober reads it
    between the kernel's count and its own: neither wobble is traffic heard (an idle link
    said to be alive by traffic, the metric wrong, a suspicion cleared for nothing)."""
    watch = passive.start(Packets(10, 10, 10, 10), 0.0)
    wobbles = [
        Packets(11, 11, 11, 10, in_flight=1),  # counted by the kernel, not yet read
        Packets(11, 11, 11, 11),  # read
        Packets(12, 11, 12, 12),  # read before the kernel's count was taken
        Packets(12, 12, 12, 12),  # the kernel's count catches up
    ]
    for i, sample in enumerate(wobbles, 1):
        watch, _ = passive.observe(watch, sample, 0.1 * i, rtt=0.02, bursts_per_day=PER_DAY)
        assert watch.last_heard is None, sample
    # others' packets are heard, once, whatever the wobbles before
    watch, _ = passive.observe(watch, Packets(12, 15, 12, 12), 0.5, rtt=0.02, bursts_per_day=PER_DAY)
    assert watch.last_heard == 0.5
    watch, _ = passive.observe(watch, Packets(12, 15, 12, 12), 0.6, rtt=0.02, bursts_per_day=PER_DAY)
    assert watch.last_heard == 0.5


def test_counters_that_start_again_are_followed() -> None:
    """The nftables table rewritten: its counters start from nothing, and what comes in
    after is heard at once, not only once the old count is passed."""
    watch = passive.start(Packets(1000, 1000, 0, 0), 0.0)
    watch, _ = passive.observe(watch, Packets(0, 0, 0, 0), 0.1, rtt=0.02, bursts_per_day=PER_DAY)
    watch, _ = passive.observe(watch, Packets(0, 3, 0, 0), 0.2, rtt=0.02, bursts_per_day=PER_DAY)
    assert watch.last_heard == 0.2
