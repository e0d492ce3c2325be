/* Retry budget (as in Finagle and gRPC): each call deposits, each retry withdraws, and a retry
 * is allowed while withdrawals in the last ttl stay below ratio * deposits + min_per_s * ttl.
 * Time is split into FS_BUDGET_SLOTS buckets; old buckets expire as time advances. */
#ifndef FS_BUDGET_H
#define FS_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#define FS_BUDGET_SLOTS 10

typedef struct fs_budget {
    double ratio;           /* retries allowed per call, e.g. 0.2 */
    double floor;           /* retries always allowed per window: min_per_s * ttl */
    int64_t slot_ns;        /* ttl / FS_BUDGET_SLOTS */
    int64_t head;           /* index (now_ns / slot_ns) of the newest slot */
    uint64_t deposits[FS_BUDGET_SLOTS];
    uint64_t withdrawals[FS_BUDGET_SLOTS];
} fs_budget;

/* ratio >= 0 and finite, min_per_s >= 0 and finite, ttl_ns >= FS_BUDGET_SLOTS.
 * Returns 0, or -1 when an argument is out of range or floor overflows to inf (the budget is
 * then untouched). The window is FS_BUDGET_SLOTS whole slots of ttl_ns / FS_BUDGET_SLOTS (integer
 * division), so an event counts for between (SLOTS-1) and SLOTS slot widths, never past ttl. */
int fs_budget_init(fs_budget *b, double ratio, double min_per_s, int64_t ttl_ns);

/* Records one call at now_ns (monotonic nanoseconds, never decreasing between calls).
 * A time earlier than the newest slot seen (or before 0) is counted in the newest slot. */
void fs_budget_deposit(fs_budget *b, int64_t now_ns);

/* Takes one retry from the budget if it allows one; returns whether it did. */
bool fs_budget_try_withdraw(fs_budget *b, int64_t now_ns);

/* Retries still allowed at now_ns (may be fractional; >= 0). */
double fs_budget_available(fs_budget *b, int64_t now_ns);

#endif
