/* Fail-fast latch against a model. Invariants: it opens exactly at the threshold-th
 * consecutive failure while closed (or by trip), rejects while open with the exact time left,
 * closes lazily at the first admission once the recovery time has passed, and is_open agrees
 * with admit. */
#include "fs_failfast.h"
#include "fuzz.h"

/* When an opening at now ends (saturating; meaningless without a recovery time). */
static int64_t deadline(int64_t now, int64_t recovery)
{
    if (recovery < 0) {
        return 0;
    }
    return now > INT64_MAX - recovery ? INT64_MAX : now + recovery;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    uint64_t threshold = fz_u8(&f) == 0xff ? fz_u64(&f) : fz_range(&f, 0, 6);
    int64_t recovery = (int64_t)fz_u64(&f);
    if (!(fz_u8(&f) & 3)) {
        recovery %= 1000000;
    }
    fs_failfast ff;
    if (fs_failfast_init(&ff, threshold, recovery) < 0) {
        FZ_CHECK(recovery == 0);
        return 0;
    }
    int64_t unit = recovery > 0 && recovery < INT64_MAX / 4 ? recovery / 4 + 1 : 1000;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    bool open = false;
    uint64_t failures = 0;
    int64_t until = 0;
    while (fz_more(&f)) {
        uint8_t op = fz_u8(&f) % 6;
        if (op == 0) {
            fz_wait(&f, &now, unit);
        }
        else if (op == 1) {
            bool is_open = fs_failfast_is_open(&ff, now);
            int64_t retry = -2;
            int v = fs_failfast_admit(&ff, now, &retry);
            FZ_CHECK(is_open == (v == FS_FF_REJECT));
            if (!open) {
                FZ_CHECK(v == FS_FF_ADMIT);
            }
            else if (recovery < 0) {
                FZ_CHECK(v == FS_FF_REJECT && retry == -1);
            }
            else if (now < until) {
                FZ_CHECK(v == FS_FF_REJECT && retry == until - now);
            }
            else {
                FZ_CHECK(v == FS_FF_ADMIT_CLOSED);
                open = false;
                failures = 0;
            }
        }
        else if (op == 2) {
            bool opened = fs_failfast_failure(&ff, now);
            failures += failures < UINT64_MAX;
            bool expect = !open && threshold > 0 && failures >= threshold;
            FZ_CHECK(opened == expect);
            if (opened) {
                open = true;
                until = deadline(now, recovery);
            }
        }
        else if (op == 3) {
            fs_failfast_success(&ff);
            failures = 0;
        }
        else if (op == 4) {
            FZ_CHECK(fs_failfast_trip(&ff, now) == !open);
            if (!open) {
                open = true;
                until = deadline(now, recovery);
            }
        }
        else {
            FZ_CHECK(fs_failfast_reset(&ff) == open);
            open = false;
            failures = 0;
        }
        FZ_CHECK(ff.open == open && ff.failures == failures);
        FZ_CHECK(!open || recovery < 0 || ff.open_until_ns == until);
    }
    return 0;
}
