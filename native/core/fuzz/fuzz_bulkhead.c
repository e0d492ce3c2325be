/* Bulkhead counts against a model of running and queued calls. Invariants: running never
 * exceeds max_concurrency, running + queued never exceeds max_capacity, a new call never runs
 * while others are queued, a released slot passes to the queue when it is not empty, and
 * peek/try_run/acquire agree with the model. */
#include "fs_bulkhead.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    uint64_t conc = fz_range(&f, 0, 8);
    uint64_t cap = conc + fz_range(&f, 0, 8);
    if (fz_u8(&f) == 0xff) {
        cap = fz_u64(&f);   /* the range check, up to UINT64_MAX */
    }
    fs_bulkhead b;
    if (fs_bulkhead_init(&b, conc, cap) < 0) {
        FZ_CHECK(conc == 0 || cap < conc || cap > INT64_MAX);
        return 0;
    }
    uint64_t running = 0, queued = 0, peak_r = 0, peak_q = 0;
    while (fz_more(&f)) {
        uint8_t op = fz_u8(&f) % 5;
        fs_bh_verdict expect = running < conc && queued == 0 ? FS_BH_RUN
                               : running + queued < cap     ? FS_BH_WAIT
                                                            : FS_BH_FULL;
        if (op == 0) {
            FZ_CHECK(fs_bulkhead_peek(&b) == expect);
        }
        else if (op == 1) {
            FZ_CHECK(fs_bulkhead_try_run(&b) == expect);
            running += expect == FS_BH_RUN;
        }
        else if (op == 2) {
            FZ_CHECK(fs_bulkhead_acquire(&b) == expect);
            running += expect == FS_BH_RUN;
            queued += expect == FS_BH_WAIT;
        }
        else if (op == 3 && queued > 0) {
            fs_bulkhead_leave(&b);
            queued--;
        }
        else if (op == 4 && running > 0) {
            bool passed = fs_bulkhead_release(&b);
            FZ_CHECK(passed == (queued > 0));
            if (passed) {
                queued--;
            }
            else {
                running--;
            }
        }
        peak_r = running > peak_r ? running : peak_r;
        peak_q = queued > peak_q ? queued : peak_q;
        FZ_CHECK(b.running == running && b.queued == queued);
        FZ_CHECK(b.peak_running == peak_r && b.peak_queued == peak_q);
        FZ_CHECK(running <= conc && running + queued <= cap);
        FZ_CHECK(queued == 0 || running == conc);
    }
    return 0;
}
