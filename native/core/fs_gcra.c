#include "fs_gcra.h"

#include <stddef.h>

int fs_gcra_init(fs_gcra *g, int64_t interval_ns, int64_t burst)
{
    if (interval_ns < 1 || burst < 1 || burst > INT64_MAX / interval_ns) {
        return -1;
    }
    g->interval_ns = interval_ns;
    g->tolerance_ns = interval_ns * (burst - 1);
    g->tat_ns = INT64_MIN / 2;  /* far past: full bucket whatever the clock's origin */
    return 0;
}

bool fs_gcra_take(fs_gcra *g, int64_t now_ns, int64_t *retry_after_ns)
{
    int64_t tat = g->tat_ns > now_ns ? g->tat_ns : now_ns;
    int64_t allow_at = tat - g->tolerance_ns;
    if (now_ns < allow_at) {
        if (retry_after_ns != NULL) {
            *retry_after_ns = allow_at - now_ns;
        }
        return false;
    }
    g->tat_ns = tat + g->interval_ns;
    if (retry_after_ns != NULL) {
        *retry_after_ns = 0;
    }
    return true;
}
