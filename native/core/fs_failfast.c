#include "fs_failfast.h"

#include <stddef.h>

int fs_failfast_init(fs_failfast *f, uint64_t threshold, int64_t recovery_ns)
{
    if (recovery_ns == 0) {
        return -1;
    }
    f->threshold = threshold;
    f->recovery_ns = recovery_ns < 0 ? -1 : recovery_ns;
    f->failures = 0;
    f->open_until_ns = 0;
    f->open = false;
    return 0;
}

static void open_at(fs_failfast *f, int64_t now_ns)
{
    f->open = true;
    if (f->recovery_ns > 0) {
        /* Saturates: a deadline past INT64_MAX is never reached. */
        f->open_until_ns = now_ns > INT64_MAX - f->recovery_ns ? INT64_MAX : now_ns + f->recovery_ns;
    }
}

bool fs_failfast_is_open(const fs_failfast *f, int64_t now_ns)
{
    return f->open && (f->recovery_ns < 0 || now_ns < f->open_until_ns);
}

int fs_failfast_admit(fs_failfast *f, int64_t now_ns, int64_t *retry_after_ns)
{
    if (!f->open) {
        return FS_FF_ADMIT;
    }
    if (f->recovery_ns < 0) {
        if (retry_after_ns != NULL) {
            *retry_after_ns = -1;
        }
        return FS_FF_REJECT;
    }
    if (now_ns < f->open_until_ns) {
        if (retry_after_ns != NULL) {
            *retry_after_ns = f->open_until_ns - now_ns;
        }
        return FS_FF_REJECT;
    }
    f->open = false;
    f->failures = 0;
    return FS_FF_ADMIT_CLOSED;
}

bool fs_failfast_failure(fs_failfast *f, int64_t now_ns)
{
    if (f->failures < UINT64_MAX) {
        f->failures++;
    }
    if (f->open || f->threshold == 0 || f->failures < f->threshold) {
        return false;
    }
    open_at(f, now_ns);
    return true;
}

void fs_failfast_success(fs_failfast *f)
{
    f->failures = 0;
}

bool fs_failfast_trip(fs_failfast *f, int64_t now_ns)
{
    if (f->open) {
        return false;
    }
    open_at(f, now_ns);
    return true;
}

bool fs_failfast_reset(fs_failfast *f)
{
    bool was_open = f->open;
    f->open = false;
    f->failures = 0;
    return was_open;
}
