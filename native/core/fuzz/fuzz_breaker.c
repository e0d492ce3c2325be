/* Circuit breaker in all three detection modes, with slow calls, probes, isolation and resets,
 * against a model of its window (the outcomes that still count) and of the probes in flight.
 * Invariants: the window totals are exactly the model's; the breaker opens exactly when the
 * model says the threshold is met; every transition is a legal one, reported once, with the
 * epoch bumped; admissions match the state; an outcome from an earlier period changes
 * nothing; a break lasts between recovery_ns and max_recovery_ns and never shrinks while it
 * grows; the lazy move to recovering happens exactly when the break is over. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fs_breaker.h"
#include "fuzz.h"

enum { MAX_WINDOW = 32, MAX_TOKENS = 64, MAX_EVENTS = 4096 };

typedef struct model {
    uint32_t consecutive;
    uint8_t bits[MAX_EVENTS];       /* outcomes since the window was cleared, oldest first */
    int64_t index[MAX_EVENTS];      /* TIME_WINDOW: their bucket indexes */
    size_t first, len;              /* the ones still in the window: [first, first + len) */
    uint32_t probes;
    int64_t last_break;             /* length of the current break; 0 after a close */
} model;

/* Admissions not yet ended, from any period: outcomes of earlier periods must change nothing. */
static uint64_t tokens[MAX_TOKENS];
static size_t ntokens;

static void window_clear(model *m)
{
    m->consecutive = 0;
    m->first = m->len = 0;
}

static void totals(const model *m, uint32_t *calls, uint32_t *failures, uint32_t *slow)
{
    *calls = *failures = *slow = 0;
    for (size_t i = m->first; i < m->first + m->len; i++) {
        ++*calls;
        *failures += (m->bits[i] & FS_BR_BIT_FAILURE) != 0;
        *slow += (m->bits[i] & FS_BR_BIT_SLOW) != 0;
    }
}

static void model_expire(model *m, const fs_breaker *b, int64_t now)
{
    if (b->cfg->mode != FS_BR_TIME_WINDOW) {
        return;
    }
    int64_t idx = now / b->bucket_ns;
    while (m->len > 0 && m->index[m->first] <= idx - (int64_t)b->cfg->window_size) {
        m->first++;
        m->len--;
    }
}

static int model_trips(const model *m, const fs_breaker *b)
{
    const fs_breaker_config *c = b->cfg;
    if (c->mode == FS_BR_CONSECUTIVE) {
        return m->consecutive >= c->failure_threshold;
    }
    uint32_t calls, failures, slow;
    totals(m, &calls, &failures, &slow);
    if (calls < c->min_calls) {
        return 0;
    }
    return (double)failures / calls >= c->failure_rate
           || (c->slow_rate > 0.0 && (double)slow / calls >= c->slow_rate);
}

static void check_window(const model *m, const fs_breaker *b)
{
    if (b->state != FS_BR_WORKING) {
        FZ_CHECK(b->calls == 0 && b->failures == 0 && b->slow == 0 && b->consecutive == 0);
        return;
    }
    if (b->cfg->mode == FS_BR_CONSECUTIVE) {
        FZ_CHECK(b->consecutive == m->consecutive && b->consecutive < b->cfg->failure_threshold);
        return;
    }
    uint32_t calls, failures, slow;
    totals(m, &calls, &failures, &slow);
    FZ_CHECK(b->calls == calls && b->failures == failures && b->slow == slow);
    FZ_CHECK(calls <= (b->cfg->mode == FS_BR_COUNT_WINDOW ? b->cfg->window_size : MAX_EVENTS));
}

/* A move to failing happened at now: the break's length is within its bounds. */
static void opened(model *m, const fs_breaker *b, int64_t now)
{
    int64_t d = b->open_until_ns - now;
    const fs_breaker_config *c = b->cfg;
    FZ_CHECK(d >= 0 && d <= c->max_recovery_ns);
    if (m->last_break == 0) {
        /* The first break: recovery_ns (through a double, so exact to 2^-52). */
        FZ_CHECK(llabs(d - c->recovery_ns) <= (c->recovery_ns >> 52) + 1);
    }
    else {
        FZ_CHECK(d >= m->last_break);
    }
    m->last_break = d;
    window_clear(m);
    m->probes = 0;
}

static void add_token(uint64_t token)
{
    if (ntokens < MAX_TOKENS) {
        tokens[ntokens++] = token;
    }
}

static uint64_t take_token(uint8_t k)
{
    size_t i = k % ntokens;
    uint64_t t = tokens[i];
    tokens[i] = tokens[--ntokens];
    return t;
}

static fs_breaker_config decode_config(fz *f)
{
    fs_breaker_config c;
    memset(&c, 0, sizeof c);
    c.mode = (fs_br_mode)(fz_u8(f) % 3);
    c.failure_threshold = (uint32_t)fz_range(f, 1, 8);
    c.failure_rate = (double)fz_range(f, 1, 100) / 100.0;
    c.window_size = (uint32_t)fz_range(f, 1, MAX_WINDOW);
    c.window_ns = (int64_t)c.window_size * (int64_t)fz_range(f, 1, 1 << 20);
    c.min_calls = (uint32_t)fz_range(f, 1, c.window_size);
    if (fz_u8(f) & 1) {
        c.slow_ns = (int64_t)fz_range(f, 1, 1000);
        if (c.mode != FS_BR_CONSECUTIVE && (fz_u8(f) & 1)) {
            c.slow_rate = (double)fz_range(f, 1, 100) / 100.0;
        }
    }
    c.half_open_max_calls = (uint32_t)fz_range(f, 1, 4);
    c.recovery_threshold = (uint32_t)fz_range(f, 1, 4);
    c.recovery_ns = (int64_t)fz_range(f, 0, (uint64_t)1 << 30);
    c.recovery_growth = 1.0 + (double)fz_u8(f) / 32.0;
    c.max_recovery_ns = c.recovery_ns + (int64_t)fz_range(f, 0, (uint64_t)1 << 32);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    fs_breaker_config cfg = decode_config(&f);
    FZ_CHECK(fs_breaker_config_check(&cfg) == 0);
    static uint64_t buf[MAX_WINDOW * sizeof(fs_br_bucket) / 8 + 1];
    static fs_breaker b;
    static model m;
    FZ_CHECK(fs_breaker_init(&b, &cfg, buf, sizeof buf) == 0);
    memset(&m, 0, sizeof m);
    ntokens = 0;
    int64_t unit = cfg.mode == FS_BR_TIME_WINDOW ? b.bucket_ns : cfg.recovery_ns / 4 + 1;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    while (fz_more(&f) && m.first + m.len < MAX_EVENTS) {
        uint8_t op = fz_u8(&f) % 8;
        uint8_t arg = fz_u8(&f);
        fs_br_state before = b.state;
        uint32_t epoch = b.epoch;
        if (op == 0) {
            fz_wait(&f, &now, unit);
        }
        else if (op == 1 || op == 2) {
            uint64_t token = 0;
            int64_t retry = -2;
            unsigned tr = 99;
            int over = before == FS_BR_FAILING && !b.isolated && now >= b.open_until_ns;
            uint32_t probes = b.probes;
            int would = 0;
            if (op == 2) {
                /* would_reject first: it must agree with the admission that follows. */
                would = fs_breaker_would_reject(&b, now, &retry, &tr);
                FZ_CHECK(tr == (over ? FS_BR_TO_RECOVERING : 0u));
                before = b.state;
                epoch = b.epoch;
                over = 0;
            }
            fs_br_admit a = fs_breaker_acquire(&b, now, &token, &retry, &tr);
            FZ_CHECK(tr == (over ? FS_BR_TO_RECOVERING : 0u));
            FZ_CHECK(b.epoch == epoch + (tr ? 1u : 0u));
            if (tr) {
                FZ_CHECK(b.state == FS_BR_RECOVERING);
                m.probes = 0;
                probes = 0;
            }
            FZ_CHECK(op == 1 || would == (a == FS_BR_REJECTED));
            if (b.state == FS_BR_WORKING) {
                FZ_CHECK(a == FS_BR_ADMITTED && token == fs_breaker_working_token(&b));
                add_token(token);
            }
            else if (b.state == FS_BR_RECOVERING) {
                if (probes < cfg.half_open_max_calls) {
                    FZ_CHECK(a == FS_BR_PROBE && fs_breaker_token_is_probe(token));
                    m.probes++;
                    add_token(token);
                }
                else {
                    FZ_CHECK(a == FS_BR_REJECTED && retry == -1);
                }
            }
            else {
                FZ_CHECK(a == FS_BR_REJECTED);
                FZ_CHECK(retry == (b.isolated ? -1 : b.open_until_ns - now));
                FZ_CHECK(b.isolated || retry > 0);
            }
        }
        else if ((op == 3 || op == 4) && ntokens > 0) {
            uint64_t token = take_token(arg);
            int current = fs_breaker_token_current(&b, token);
            if (op == 4) {
                fs_breaker_release(&b, token);
                if (current && fs_breaker_token_is_probe(token)) {
                    m.probes--;
                }
                FZ_CHECK(b.epoch == epoch);
            }
            else {
                fs_br_outcome out = arg & 1 ? FS_BR_FAILURE : FS_BR_SUCCESS;
                int64_t duration = (int64_t)(fz_u16(&f) % 1200);
                fs_breaker saved = b;
                unsigned tr = fs_breaker_record(&b, token, out, duration, now);
                FZ_CHECK(b.epoch == epoch + (tr ? 1u : 0u));
                if (!current) {
                    FZ_CHECK(tr == 0 && memcmp(&saved, &b, sizeof b) == 0);
                }
                else if (fs_breaker_token_is_probe(token)) {
                    FZ_CHECK(before == FS_BR_RECOVERING);
                    m.probes--;
                    int slow = out == FS_BR_SUCCESS && cfg.slow_ns > 0 && duration >= cfg.slow_ns;
                    if (out == FS_BR_FAILURE || slow) {
                        FZ_CHECK(tr == FS_BR_TO_FAILING && b.state == FS_BR_FAILING);
                        opened(&m, &b, now);
                    }
                    else if (saved.probe_successes + 1 >= cfg.recovery_threshold) {
                        FZ_CHECK(tr == FS_BR_TO_WORKING && b.state == FS_BR_WORKING);
                        window_clear(&m);
                        m.probes = 0;
                        m.last_break = 0;
                    }
                    else {
                        FZ_CHECK(tr == 0 && b.probe_successes == saved.probe_successes + 1);
                    }
                }
                else {
                    FZ_CHECK(before == FS_BR_WORKING);
                    uint8_t bits = 0;
                    if (out == FS_BR_FAILURE) {
                        bits = FS_BR_BIT_FAILURE;
                    }
                    else if (cfg.slow_ns > 0 && duration >= cfg.slow_ns) {
                        bits = cfg.slow_rate > 0.0 ? FS_BR_BIT_SLOW : FS_BR_BIT_FAILURE;
                    }
                    if (cfg.mode == FS_BR_CONSECUTIVE) {
                        m.consecutive = bits ? m.consecutive + 1 : 0;
                    }
                    else {
                        model_expire(&m, &b, now);
                        size_t at = m.first + m.len;
                        m.bits[at] = bits;
                        m.index[at] = now / (b.bucket_ns ? b.bucket_ns : 1);
                        m.len++;
                        if (cfg.mode == FS_BR_COUNT_WINDOW && m.len > cfg.window_size) {
                            m.first++;
                            m.len--;
                        }
                    }
                    if (model_trips(&m, &b)) {
                        FZ_CHECK(tr == FS_BR_TO_FAILING && b.state == FS_BR_FAILING);
                        opened(&m, &b, now);
                    }
                    else {
                        FZ_CHECK(tr == 0 && b.state == FS_BR_WORKING);
                    }
                }
            }
        }
        else if (op == 5) {
            if (arg < 24) {
                unsigned tr = fs_breaker_isolate(&b, now);
                FZ_CHECK(b.state == FS_BR_FAILING && b.isolated);
                FZ_CHECK(tr == (before == FS_BR_FAILING ? 0u : FS_BR_TO_FAILING));
                FZ_CHECK(b.epoch == epoch + (tr ? 1u : 0u));
                if (tr) {
                    window_clear(&m);
                    m.probes = 0;
                }
            }
            else if (arg < 48) {
                unsigned tr = fs_breaker_reset(&b);
                FZ_CHECK(b.state == FS_BR_WORKING && !b.isolated && b.epoch == epoch + 1);
                FZ_CHECK(tr == (before == FS_BR_WORKING ? 0u : FS_BR_TO_WORKING));
                window_clear(&m);
                m.probes = 0;
                m.last_break = 0;
            }
        }
        else if (op == 6) {
            fs_breaker_expire(&b, now);
            model_expire(&m, &b, now);
        }
        else {
            int holds = fs_breaker_holds_state(&b, now);
            model_expire(&m, &b, now);
            uint32_t calls, failures, slow;
            totals(&m, &calls, &failures, &slow);
            int expect = b.state != FS_BR_WORKING || b.isolated || m.consecutive > 0
                         || (cfg.mode != FS_BR_CONSECUTIVE && (failures > 0 || slow > 0));
            FZ_CHECK(holds == expect);
            int64_t ra = fs_breaker_retry_after(&b, now);
            if (b.state == FS_BR_FAILING && !b.isolated) {
                FZ_CHECK(ra == (b.open_until_ns > now ? b.open_until_ns - now : 0));
            }
            else {
                FZ_CHECK(ra == -1);
            }
        }
        FZ_CHECK((unsigned)b.state <= FS_BR_FAILING);
        FZ_CHECK(b.state == before || b.epoch != epoch);
        FZ_CHECK(b.probes == (b.state == FS_BR_RECOVERING ? m.probes : 0u));
        FZ_CHECK(b.probes <= cfg.half_open_max_calls);
        check_window(&m, &b);
    }
    return 0;
}
