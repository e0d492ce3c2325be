/* GCRA: takes, reservations with a max wait, give-backs and credit queries at random times.
 * Invariants: tokens are used in order, never more than t/interval + burst in any span t;
 * a refusal's wait is exact (a token is there at now + wait, not a nanosecond before); only
 * the latest reservation can be given back; the credit stays in [0, interval * burst]. */
#include <string.h>

#include "fs_gcra.h"
#include "fuzz.h"

enum { MAX_TOKENS = 2048, SPAN_CHECK = 512 };

static int64_t uses[MAX_TOKENS];    /* use time of each token still spent, in order */
static int64_t tats[MAX_TOKENS];    /* TAT each of them left behind (their give-back ids) */
static size_t n;

static void admitted(const fs_gcra *g, int64_t burst, int64_t use, int64_t tat_after)
{
    FZ_CHECK(n == 0 || use >= uses[n - 1]);
    uses[n] = use;
    tats[n] = tat_after;
    size_t lo = n > SPAN_CHECK ? n - SPAN_CHECK : 0;
    for (size_t i = lo; i < n; i++) {
        FZ_CHECK((int64_t)(n - i + 1) <= (use - uses[i]) / g->interval_ns + burst);
    }
    n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    fs_gcra g;
    int64_t interval = (int64_t)fz_range(&f, 1, (uint64_t)1 << 30);
    int64_t burst = (int64_t)fz_range(&f, 1, 64);
    if (fz_u8(&f) & 1) {
        burst = (int64_t)fz_range(&f, 1, (uint64_t)INT64_MAX / 2);    /* maybe out of range */
    }
    if (fs_gcra_init(&g, interval, burst) < 0) {
        FZ_CHECK(burst > INT64_MAX / 4 / interval);
        return 0;
    }
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    n = 0;
    while (fz_more(&f) && n < MAX_TOKENS) {
        uint8_t op = fz_u8(&f) % 5;
        if (op == 0) {
            fz_wait(&f, &now, interval);
        }
        else if (op == 1 || op == 2) {
            int64_t max_wait = op == 1 ? 0 : (int64_t)(fz_u16(&f) % 256) * interval / 16;
            fs_gcra before = g;
            int64_t wait = -1;
            bool ok = op == 1 ? fs_gcra_take(&g, now, &wait)
                              : fs_gcra_reserve_tat(&g, &g.tat_ns, now, max_wait, &wait);
            FZ_CHECK(wait >= 0);
            if (ok) {
                FZ_CHECK(wait <= max_wait);
                FZ_CHECK(g.tat_ns > before.tat_ns);
                admitted(&g, burst, now + wait, g.tat_ns);
            }
            else {
                FZ_CHECK(wait > max_wait && memcmp(&g, &before, sizeof g) == 0);
                fs_gcra probe = g;
                int64_t w2;
                FZ_CHECK(fs_gcra_take(&probe, now + wait, &w2) && w2 == 0);
                probe = g;
                FZ_CHECK(!fs_gcra_take(&probe, now + wait - 1, &w2) && w2 == 1);
            }
        }
        else if (op == 3 && n > 0) {
            /* Give back one of the recent reservations: only the latest may come back. */
            size_t k = n - 1 - fz_u8(&f) % (n < 4 ? n : 4);
            int64_t tat = g.tat_ns;
            bool ok = fs_gcra_give_back_tat(&g, &g.tat_ns, tats[k]);
            FZ_CHECK(ok == (tats[k] == tat));
            FZ_CHECK(!ok || k == n - 1);
            if (ok) {
                FZ_CHECK(g.tat_ns == tat - interval);
                n--;
            }
        }
        else {
            int64_t credit = fs_gcra_credit_ns(&g, g.tat_ns, now);
            FZ_CHECK(credit >= 0 && credit <= interval * burst);
            FZ_CHECK(fs_gcra_idle(g.tat_ns, now) == (credit == interval * burst));
            /* A full credit's worth of tokens is there now, and no more. */
            int64_t whole = credit / interval;
            if (whole <= 64) {
                fs_gcra probe = g;
                for (int64_t i = 0; i < whole; i++) {
                    FZ_CHECK(fs_gcra_take(&probe, now, NULL));
                }
                FZ_CHECK(!fs_gcra_take(&probe, now, NULL));
            }
        }
    }
    return 0;
}
