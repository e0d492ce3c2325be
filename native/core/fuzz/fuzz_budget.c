/* Retry budget against a model of deposits and withdrawals with their slots. Invariants: a
 * withdrawal succeeds exactly when withdrawals + 1 <= ratio * deposits + floor over the events
 * still in the window, the window never counts an event older than ttl, and available() is
 * that headroom, never negative. */
#include <math.h>

#include "fs_budget.h"
#include "fuzz.h"

enum { MAX_EVENTS = 4096 };

static struct {
    int64_t slot;
    int withdrawal;
} events[MAX_EVENTS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    double ratio = (double)fz_u8(&f) / 64.0;
    double min_per_s = (double)fz_u8(&f) / 4.0;
    int64_t ttl = (int64_t)fz_range(&f, 0, (uint64_t)1 << 36);
    fs_budget b;
    if (fs_budget_init(&b, ratio, min_per_s, ttl) < 0) {
        FZ_CHECK(ttl < FS_BUDGET_SLOTS);
        return 0;
    }
    int64_t slot_ns = ttl / FS_BUDGET_SLOTS;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    int64_t head = 0;
    size_t n = 0;
    while (fz_more(&f) && n < MAX_EVENTS) {
        uint8_t op = fz_u8(&f) % 4;
        if (op == 0) {
            fz_wait(&f, &now, slot_ns);
            continue;
        }
        if (now / slot_ns > head) {
            head = now / slot_ns;
        }
        uint64_t d = 0, w = 0;
        for (size_t i = 0; i < n; i++) {
            if (head - events[i].slot < FS_BUDGET_SLOTS) {
                d += !events[i].withdrawal;
                w += (uint64_t)events[i].withdrawal;
            }
        }
        double headroom = ratio * (double)d + b.floor - (double)w;
        if (op == 1) {
            fs_budget_deposit(&b, now);
            events[n].slot = head;
            events[n++].withdrawal = 0;
        }
        else if (op == 2) {
            bool ok = fs_budget_try_withdraw(&b, now);
            FZ_CHECK(ok == ((double)w + 1.0 <= ratio * (double)d + b.floor));
            if (ok) {
                events[n].slot = head;
                events[n++].withdrawal = 1;
            }
        }
        else {
            double avail = fs_budget_available(&b, now);
            FZ_CHECK(avail >= 0.0 && avail == (headroom > 0.0 ? headroom : 0.0));
        }
    }
    return 0;
}
