/* Circuit breaker state machine. */
#include <stdint.h>
#include <string.h>

#include "../fs_breaker.h"
#include "runner.h"

#define S 1000000000LL

static fs_breaker_config consecutive_cfg(uint32_t threshold)
{
    fs_breaker_config c;
    memset(&c, 0, sizeof c);
    c.mode = FS_BR_CONSECUTIVE;
    c.failure_threshold = threshold;
    c.half_open_max_calls = 1;
    c.recovery_threshold = 2;
    c.recovery_ns = 10 * S;
    c.recovery_growth = 1.0;
    c.max_recovery_ns = 10 * S;
    return c;
}

/* Admits one call at now and records its outcome; returns the transition bits. */
static unsigned call(fs_breaker *b, int64_t now, fs_br_outcome o, int64_t duration)
{
    uint64_t token;
    int64_t after;
    unsigned tr;
    fs_br_admit a = fs_breaker_acquire(b, now, &token, &after, &tr);
    if (a == FS_BR_REJECTED) {
        return 0x100;
    }
    return tr | fs_breaker_record(b, token, o, duration, now + duration);
}

static void test_config_check(void)
{
    fs_breaker_config c = consecutive_cfg(3);
    CHECK(fs_breaker_config_check(&c) == 0);
    c.failure_threshold = 0;
    CHECK(fs_breaker_config_check(&c) < 0);
    c = consecutive_cfg(3);
    c.slow_rate = 0.5;          /* a slow-call rate needs a window */
    c.slow_ns = S;
    CHECK(fs_breaker_config_check(&c) < 0);
    c = consecutive_cfg(3);
    c.recovery_growth = 0.5;
    CHECK(fs_breaker_config_check(&c) < 0);
    c = consecutive_cfg(3);
    c.max_recovery_ns = S;      /* below recovery_ns */
    CHECK(fs_breaker_config_check(&c) < 0);
    c = consecutive_cfg(3);
    c.mode = FS_BR_COUNT_WINDOW;
    c.failure_rate = 0.5;
    c.window_size = 4;
    c.min_calls = 5;            /* more than the window holds */
    CHECK(fs_breaker_config_check(&c) < 0);
    c.min_calls = 4;
    CHECK(fs_breaker_config_check(&c) == 0);
    c.failure_rate = 0.0;
    CHECK(fs_breaker_config_check(&c) < 0);
    c.failure_rate = 0.0 / 0.0;
    CHECK(fs_breaker_config_check(&c) < 0);
    c.failure_rate = 0.5;
    c.mode = FS_BR_TIME_WINDOW;
    c.window_ns = 3;            /* a bucket would last less than 1 ns */
    CHECK(fs_breaker_config_check(&c) < 0);
    c.window_ns = 4;
    CHECK(fs_breaker_config_check(&c) == 0);
    CHECK(fs_breaker_buffer_size(&c) == 4 * sizeof(fs_br_bucket));
    fs_breaker b;
    char small[8];
    CHECK(fs_breaker_init(&b, &c, small, sizeof small) < 0);
}

static void test_consecutive_opens_and_recovers(void)
{
    fs_breaker_config c = consecutive_cfg(3);
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);     /* resets the run */
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(fs_breaker_holds_state(&b, 0));
    CHECK(call(&b, S, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
    CHECK(b.state == FS_BR_FAILING);
    uint64_t token;
    int64_t after;
    unsigned tr;
    CHECK(fs_breaker_acquire(&b, 5 * S, &token, &after, &tr) == FS_BR_REJECTED);
    CHECK_EQ_INT(after, 6 * S);
    CHECK(tr == 0);
    /* Break over: the next admission moves to recovering and takes the only probe slot. */
    CHECK(fs_breaker_acquire(&b, 11 * S, &token, &after, &tr) == FS_BR_PROBE);
    CHECK(tr == FS_BR_TO_RECOVERING);
    CHECK(b.state == FS_BR_RECOVERING);
    uint64_t t2;
    CHECK(fs_breaker_acquire(&b, 11 * S, &t2, &after, &tr) == FS_BR_REJECTED);
    CHECK_EQ_INT(after, -1);
    CHECK(fs_breaker_record(&b, token, FS_BR_SUCCESS, 0, 11 * S) == 0);
    CHECK(call(&b, 11 * S, FS_BR_SUCCESS, 0) == FS_BR_TO_WORKING);
    CHECK(b.state == FS_BR_WORKING);
    CHECK(!fs_breaker_holds_state(&b, 11 * S));
}

static void test_failed_probe_reopens_with_growth(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.recovery_growth = 2.0;
    c.max_recovery_ns = 35 * S;
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
    CHECK_EQ_INT(b.open_until_ns, 10 * S);
    CHECK(call(&b, 10 * S, FS_BR_FAILURE, 0) == (FS_BR_TO_RECOVERING | FS_BR_TO_FAILING));
    CHECK_EQ_INT(b.open_until_ns, 30 * S);          /* 20 s */
    CHECK(call(&b, 30 * S, FS_BR_FAILURE, 0) == (FS_BR_TO_RECOVERING | FS_BR_TO_FAILING));
    CHECK_EQ_INT(b.open_until_ns, 65 * S);          /* 40 s capped at 35 s */
    CHECK(call(&b, 65 * S, FS_BR_SUCCESS, 0) == FS_BR_TO_RECOVERING);
    CHECK(call(&b, 65 * S, FS_BR_SUCCESS, 0) == FS_BR_TO_WORKING);
    /* Closed: the next opening starts from recovery_ns again. */
    CHECK(call(&b, 70 * S, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
    CHECK_EQ_INT(b.open_until_ns, 80 * S);
}

static void test_release_and_stale_tokens(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.half_open_max_calls = 2;
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    uint64_t w, p1, p2, p3;
    int64_t after;
    unsigned tr;
    CHECK(fs_breaker_acquire(&b, 0, &w, &after, &tr) == FS_BR_ADMITTED);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
    /* A call admitted while working that ends after the opening changes nothing. */
    CHECK(fs_breaker_record(&b, w, FS_BR_FAILURE, 0, 0) == 0);
    CHECK(fs_breaker_acquire(&b, 10 * S, &p1, &after, &tr) == FS_BR_PROBE);
    CHECK(fs_breaker_acquire(&b, 10 * S, &p2, &after, &tr) == FS_BR_PROBE);
    CHECK(fs_breaker_acquire(&b, 10 * S, &p3, &after, &tr) == FS_BR_REJECTED);
    fs_breaker_release(&b, p1);                     /* cancelled probe: slot back */
    CHECK(b.probes == 1);
    CHECK(fs_breaker_acquire(&b, 10 * S, &p3, &after, &tr) == FS_BR_PROBE);
    CHECK(fs_breaker_record(&b, p2, FS_BR_SUCCESS, 0, 10 * S) == 0);
    CHECK(fs_breaker_record(&b, p3, FS_BR_SUCCESS, 0, 10 * S) == FS_BR_TO_WORKING);
    /* A probe of an ended period is neither counted nor released twice. */
    fs_breaker_release(&b, p1);
    CHECK(fs_breaker_record(&b, p1, FS_BR_FAILURE, 0, 10 * S) == 0);
    CHECK(b.state == FS_BR_WORKING);
}

static void test_count_window(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.mode = FS_BR_COUNT_WINDOW;
    c.failure_rate = 0.5;
    c.window_size = 4;
    c.min_calls = 4;
    uint8_t buf[4];
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, buf, sizeof buf) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);      /* 3 calls < min_calls */
    CHECK(b.failures == 3);
    fs_breaker_reset(&b);
    CHECK(b.calls == 0 && b.failures == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);      /* 1/4 */
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);      /* oldest success leaves: 1/4 */
    CHECK(b.calls == 4 && b.failures == 1);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);   /* S F S F: 2/4 */
    CHECK(b.calls == 0 && b.failures == 0);         /* the next period starts empty */
}

static void test_count_window_ratio_exact(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.mode = FS_BR_COUNT_WINDOW;
    c.failure_rate = 0.3;
    c.window_size = 10;
    c.min_calls = 10;
    uint8_t buf[10];
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, buf, sizeof buf) == 0);
    for (int i = 0; i < 7; i++) {
        CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);
    }
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    /* 3 of 10 is exactly 0.3: opens (0.3 * 10 in floating point would be above 3). */
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
}

static void test_time_window(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.mode = FS_BR_TIME_WINDOW;
    c.failure_rate = 0.5;
    c.window_size = 10;         /* buckets of 1 s */
    c.window_ns = 10 * S;
    c.min_calls = 3;
    fs_br_bucket buf[10];
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, buf, sizeof buf) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, S, FS_BR_FAILURE, 0) == 0);
    CHECK(b.calls == 2);
    /* 10 s later the first failure left the window; the second (bucket 1) too at 11 s. */
    CHECK(call(&b, 10 * S, FS_BR_SUCCESS, 0) == 0);
    CHECK(b.calls == 2 && b.failures == 1);
    CHECK(call(&b, 11 * S, FS_BR_SUCCESS, 0) == 0);
    CHECK(b.calls == 2 && b.failures == 0);
    CHECK(fs_breaker_holds_state(&b, 11 * S) == 0);
    CHECK(call(&b, 12 * S, FS_BR_FAILURE, 0) == 0); /* 1/3 */
    CHECK(fs_breaker_holds_state(&b, 12 * S) == 1);
    CHECK(call(&b, 12 * S, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);  /* 2/4 */
    /* A long quiet spell empties everything. */
    fs_breaker_reset(&b);
    CHECK(call(&b, 13 * S, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 13 * S, FS_BR_FAILURE, 0) == 0);
    fs_breaker_expire(&b, 1000 * S);
    CHECK(b.calls == 0 && b.failures == 0);
}

static void test_slow_calls(void)
{
    /* Slow calls as failures (no rate of their own), consecutive mode. */
    fs_breaker_config c = consecutive_cfg(2);
    c.slow_ns = S;
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, S - 1) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 2 * S) == FS_BR_TO_FAILING);
    /* A slow probe is a failed probe. */
    CHECK(call(&b, 20 * S, FS_BR_SUCCESS, 2 * S) == (FS_BR_TO_RECOVERING | FS_BR_TO_FAILING));

    /* A slow-call rate of its own: slow calls are not failures. */
    fs_breaker_config w = consecutive_cfg(1);
    w.mode = FS_BR_COUNT_WINDOW;
    w.failure_rate = 0.5;
    w.window_size = 4;
    w.min_calls = 4;
    w.slow_ns = S;
    w.slow_rate = 0.75;
    uint8_t buf[4];
    CHECK(fs_breaker_init(&b, &w, buf, sizeof buf) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == 0);
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, S) == 0);      /* failing: not also slow */
    CHECK(b.slow == 2 && b.failures == 1);
    CHECK(call(&b, 0, FS_BR_SUCCESS, 0) == 0);      /* 2/4 slow, 1/4 failed */
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == 0);      /* slow F fast slow: 2/4 */
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == 0);      /* F fast slow slow: 2/4 */
    CHECK(call(&b, 0, FS_BR_SUCCESS, S) == FS_BR_TO_FAILING);   /* fast slow slow slow */
}

static void test_isolate_and_reset(void)
{
    fs_breaker_config c = consecutive_cfg(5);
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    uint64_t w, t;
    int64_t after;
    unsigned tr;
    CHECK(fs_breaker_acquire(&b, 0, &w, &after, &tr) == FS_BR_ADMITTED);
    CHECK(fs_breaker_isolate(&b, 0) == FS_BR_TO_FAILING);
    CHECK(fs_breaker_isolate(&b, 0) == 0);
    CHECK(fs_breaker_acquire(&b, 1000 * S, &t, &after, &tr) == FS_BR_REJECTED);
    CHECK_EQ_INT(after, -1);
    CHECK(tr == 0);
    CHECK(fs_breaker_retry_after(&b, 0) == -1);
    CHECK(fs_breaker_reset(&b) == FS_BR_TO_WORKING);
    CHECK(fs_breaker_reset(&b) == 0);
    CHECK(fs_breaker_record(&b, w, FS_BR_FAILURE, 0, 0) == 0);  /* admitted before: ignored */
    CHECK(b.consecutive == 0);
    CHECK(fs_breaker_acquire(&b, 1000 * S, &t, &after, &tr) == FS_BR_ADMITTED);
}

static void test_trip_opens_for_the_asked_break(void)
{
    fs_breaker_config c = consecutive_cfg(5);
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    uint64_t w, t;
    int64_t after;
    unsigned tr;
    CHECK(fs_breaker_acquire(&b, 0, &w, &after, &tr) == FS_BR_ADMITTED);
    CHECK(fs_breaker_trip(&b, S, 30 * S) == FS_BR_TO_FAILING);  /* longer than recovery_ns */
    CHECK(fs_breaker_retry_after(&b, S) == 30 * S);
    CHECK(fs_breaker_record(&b, w, FS_BR_FAILURE, 0, S) == 0);  /* admitted before: ignored */
    CHECK(fs_breaker_trip(&b, 2 * S, 5 * S) == 0);              /* never shortens a break */
    CHECK(fs_breaker_retry_after(&b, 2 * S) == 29 * S);
    CHECK(fs_breaker_trip(&b, 2 * S, 40 * S) == 0);             /* extends one */
    CHECK(fs_breaker_retry_after(&b, 2 * S) == 40 * S);
    CHECK(fs_breaker_acquire(&b, 41 * S, &t, &after, &tr) == FS_BR_REJECTED);
    CHECK(fs_breaker_acquire(&b, 42 * S, &t, &after, &tr) == FS_BR_PROBE);
    CHECK(tr == FS_BR_TO_RECOVERING);
    /* A failed probe reopens with the configured break; a trip while recovering opens too. */
    CHECK(fs_breaker_trip(&b, 43 * S, 2 * S) == FS_BR_TO_FAILING);
    CHECK(fs_breaker_retry_after(&b, 43 * S) == 2 * S);
    fs_breaker_release(&b, t);
    CHECK(fs_breaker_isolate(&b, 44 * S) == 0);
    CHECK(fs_breaker_trip(&b, 44 * S, S) == 0);                 /* isolated: no effect */
    CHECK(fs_breaker_retry_after(&b, 44 * S) == -1);
}

static void test_saturating_break(void)
{
    fs_breaker_config c = consecutive_cfg(1);
    c.recovery_ns = INT64_MAX;
    c.max_recovery_ns = INT64_MAX;
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(call(&b, 5 * S, FS_BR_FAILURE, 0) == FS_BR_TO_FAILING);
    CHECK(b.open_until_ns == INT64_MAX);
    CHECK(fs_breaker_retry_after(&b, 5 * S) == INT64_MAX - 5 * S);
}

/* The one-step success agrees with fs_breaker_record where it applies, and declines elsewhere. */
static void test_quick_success(void)
{
    fs_breaker_config c = consecutive_cfg(3);
    fs_breaker b;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    uint64_t token = fs_breaker_working_token(&b);
    CHECK(fs_breaker_quick_success(&b, token) == 1);
    CHECK(b.consecutive == 0);
    /* The run starts over: two more failures do not open it, a third does. */
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) == 0);
    CHECK(call(&b, 0, FS_BR_FAILURE, 0) & FS_BR_TO_FAILING);
    /* A token of an earlier period, or any token while not working: declined. */
    CHECK(fs_breaker_quick_success(&b, token) == 0);
    CHECK(fs_breaker_quick_success(&b, fs_breaker_working_token(&b)) == 0);
    /* Slow-call detection needs the duration: declined. */
    c.slow_ns = S;
    CHECK(fs_breaker_init(&b, &c, NULL, 0) == 0);
    CHECK(fs_breaker_quick_success(&b, fs_breaker_working_token(&b)) == 0);
}

const fs_test breaker_tests[] = {
    TEST_CASE(test_quick_success),
    TEST_CASE(test_config_check),
    TEST_CASE(test_consecutive_opens_and_recovers),
    TEST_CASE(test_failed_probe_reopens_with_growth),
    TEST_CASE(test_release_and_stale_tokens),
    TEST_CASE(test_count_window),
    TEST_CASE(test_count_window_ratio_exact),
    TEST_CASE(test_time_window),
    TEST_CASE(test_slow_calls),
    TEST_CASE(test_isolate_and_reset),
    TEST_CASE(test_trip_opens_for_the_asked_break),
    TEST_CASE(test_saturating_break),
    TEST_END,
};
