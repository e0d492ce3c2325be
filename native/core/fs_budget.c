#include "fs_budget.h"

#include <math.h>
#include <string.h>

int fs_budget_init(fs_budget *b, double ratio, double min_per_s, int64_t ttl_ns)
{
    if (!(isfinite(ratio) && ratio >= 0.0) || !(isfinite(min_per_s) && min_per_s >= 0.0) ||
        ttl_ns < FS_BUDGET_SLOTS)
        return -1;
    double floor_ = min_per_s * ((double)ttl_ns / 1e9);
    if (!isfinite(floor_))
        return -1;
    memset(b, 0, sizeof *b);
    b->ratio = ratio;
    b->floor = floor_;
    b->slot_ns = ttl_ns / FS_BUDGET_SLOTS;
    b->head = 0;
    return 0;
}

/* Moves head to now's slot, zeroing every slot that left the window. */
static size_t advance(fs_budget *b, int64_t now_ns)
{
    int64_t idx = now_ns / b->slot_ns;
    if (idx > b->head) {
        /* Unsigned difference: well defined even across the whole int64 range. */
        uint64_t jump = (uint64_t)idx - (uint64_t)b->head;
        if (jump >= FS_BUDGET_SLOTS) {
            memset(b->deposits, 0, sizeof b->deposits);
            memset(b->withdrawals, 0, sizeof b->withdrawals);
        } else {
            for (uint64_t i = 1; i <= jump; i++) {
                size_t s = (size_t)(((uint64_t)b->head + i) % FS_BUDGET_SLOTS);
                b->deposits[s] = 0;
                b->withdrawals[s] = 0;
            }
        }
        b->head = idx;
    }
    /* head >= 0 always (starts at 0, only grows), so this is a valid slot. */
    return (size_t)(b->head % FS_BUDGET_SLOTS);
}

static void totals(const fs_budget *b, uint64_t *d, uint64_t *w)
{
    *d = *w = 0;
    for (size_t i = 0; i < FS_BUDGET_SLOTS; i++) {
        *d += b->deposits[i];
        *w += b->withdrawals[i];
    }
}

void fs_budget_deposit(fs_budget *b, int64_t now_ns)
{
    b->deposits[advance(b, now_ns)]++;
}

bool fs_budget_try_withdraw(fs_budget *b, int64_t now_ns)
{
    size_t s = advance(b, now_ns);
    uint64_t d, w;
    totals(b, &d, &w);
    if (!((double)w + 1.0 <= b->ratio * (double)d + b->floor))
        return false;
    b->withdrawals[s]++;
    return true;
}

double fs_budget_available(fs_budget *b, int64_t now_ns)
{
    advance(b, now_ns);
    uint64_t d, w;
    totals(b, &d, &w);
    double h = b->ratio * (double)d + b->floor - (double)w;
    return h > 0.0 ? h : 0.0;
}
