from media.bitrate_policy import publisher_bitrate


def test_uplink_estimate_alone_when_subscribers_are_unknown():
    assert publisher_bitrate(2_000_000, []) == 2_000_000
    assert publisher_bitrate(2_000_000, [500_000, None]) == 2_000_000  # one subscriber has not reported yet
    assert publisher_bitrate(None, [None]) is None


def test_one_weak_subscriber_does_not_cap_the_publisher():
    assert publisher_bitrate(2_000_000, [300_000, 3_000_000]) == 2_000_000


def test_capped_when_every_subscriber_is_constrained():
    assert publisher_bitrate(2_000_000, [300_000, 800_000]) == 800_000
    assert publisher_bitrate(None, [300_000, 800_000]) == 800_000
