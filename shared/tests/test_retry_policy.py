from kefu_shared.dead_letter import RetryPolicy


def test_backoff_grows_exponentially_with_jitter_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(attempts=5, initial_backoff=0.1, max_backoff=1.0)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
