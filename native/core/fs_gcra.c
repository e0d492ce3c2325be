#include "fs_gcra.h"

#include <stddef.h>

int fs_gcra_init(fs_gcra *g, int64_t interval_ns, int64_t burst)
{
    if (interval_ns < 1 || burst < 1 || burst > INT64_MAX / 4 / interval_ns) {
        return -1;
    }
    g->interval_ns = interval_ns;
    g->tolerance_ns = interval_ns * (burst - 1);
    g->tat_ns = FS_GCRA_FULL;
    return 0;
}

bool fs_gcra_reserve_tat(const fs_gcra *g, int64_t *tat, int64_t now_ns, int64_t max_wait_ns,
                         int64_t *wait_ns)
{
    int64_t t = *tat > now_ns ? *tat : now_ns;
    int64_t allow_at = t - g->tolerance_ns;
    int64_t wait = allow_at > now_ns ? allow_at - now_ns : 0;
    *wait_ns = wait;
    if (wait > max_wait_ns) {
        return false;
    }
    *tat = t + g->interval_ns;
    return true;
}

bool fs_gcra_take(fs_gcra *g, int64_t now_ns, int64_t *retry_after_ns)
{
    int64_t wait;
    bool ok = fs_gcra_reserve_tat(g, &g->tat_ns, now_ns, 0, &wait);
    if (retry_after_ns != NULL) {
        *retry_after_ns = wait;
    }
    return ok;
}

bool fs_gcra_give_back_tat(const fs_gcra *g, int64_t *tat, int64_t tat_after)
{
    if (*tat != tat_after) {
        return false;
    }
    *tat -= g->interval_ns;
    return true;
}

int64_t fs_gcra_credit_ns(const fs_gcra *g, int64_t tat, int64_t now_ns)
{
    int64_t full = g->tolerance_ns + g->interval_ns;
    if (tat <= now_ns) {
        return full;
    }
    int64_t credit = full - (tat - now_ns);
    return credit > 0 ? credit : 0;
}

void fs_gcra_pause_tat(const fs_gcra *g, int64_t *tat, int64_t until_ns)
{
    /* The next admission needs t - tolerance <= now, t = max(tat, now). */
    int64_t t = until_ns > INT64_MAX / 2 ? INT64_MAX / 2 : until_ns + g->tolerance_ns;
    if (t > *tat) {
        *tat = t;
    }
}
