#include "fs_swlog.h"

#include "fs_gcra.h"

int fs_swlog_init(fs_swlog *w, int64_t *ring, uint32_t limit, int64_t window_ns)
{
    if (ring == NULL || limit < 1 || window_ns < 1 || window_ns > INT64_MAX / 4) {
        return -1;
    }
    for (uint32_t i = 0; i < limit; i++) {
        ring[i] = FS_GCRA_FULL;
    }
    w->ring = ring;
    w->window_ns = window_ns;
    w->limit = limit;
    w->head = 0;
    w->seq = 0;
    return 0;
}

bool fs_swlog_reserve(fs_swlog *w, int64_t now_ns, int64_t max_wait_ns, int64_t *wait_ns,
                      uint64_t *seq, int64_t *evicted)
{
    int64_t oldest = w->ring[w->head];
    int64_t at = oldest + w->window_ns;
    if (at < now_ns) {
        at = now_ns;
    }
    *wait_ns = at - now_ns;
    if (at - now_ns > max_wait_ns) {
        return false;
    }
    *evicted = oldest;
    w->ring[w->head] = at;
    w->head = w->head + 1 == w->limit ? 0 : w->head + 1;
    *seq = ++w->seq;
    return true;
}

bool fs_swlog_give_back(fs_swlog *w, uint64_t seq, int64_t evicted)
{
    if (seq != w->seq || seq == 0) {
        return false;
    }
    w->head = w->head == 0 ? w->limit - 1 : w->head - 1;
    w->ring[w->head] = evicted;
    w->seq--;
    return true;
}

uint32_t fs_swlog_available(const fs_swlog *w, int64_t now_ns)
{
    /* Times are ordered from head: count those that have left the window. */
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->limit; i++) {
        uint32_t k = w->head + i < w->limit ? w->head + i : w->head + i - w->limit;
        if (w->ring[k] + w->window_ns > now_ns) {
            break;
        }
        n++;
    }
    return n;
}

bool fs_swlog_idle(const fs_swlog *w, int64_t now_ns)
{
    uint32_t newest = w->head == 0 ? w->limit - 1 : w->head - 1;
    return w->ring[newest] + w->window_ns <= now_ns;
}

void fs_swlog_pause(fs_swlog *w, int64_t until_ns)
{
    int64_t at = until_ns - w->window_ns;
    for (uint32_t i = 0; i < w->limit; i++) {
        if (w->ring[i] < at) {
            w->ring[i] = at;
        }
    }
    w->seq++;   /* no earlier reservation is the latest any more */
}
