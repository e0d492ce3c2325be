/* Windowed quantiles against a model that keeps every sample with the half-window slot it was
 * recorded in. Invariants: the count is exactly the samples of the current and previous slot;
 * a p-quantile is the upper bound of the bucket of the model's ceil(p * count)-th smallest
 * sample, so within 12.5 % above it (values from 2^10 ns to the last bucket). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fs_quantile.h"
#include "fuzz.h"

enum { MAX_SAMPLES = 2048 };

static struct {
    int64_t slot;
    int64_t value;
} samples[MAX_SAMPLES];
static int64_t sorted[MAX_SAMPLES];

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t sample_value(fz *f)
{
    switch (fz_u8(f) & 7) {
    case 0:
        return -(int64_t)fz_u32(f);
    case 1:
        return (int64_t)(fz_u64(f) >> 1);                       /* up to INT64_MAX */
    case 2:
        return (int64_t)fz_u16(f);                              /* bucket 0 */
    default:
        return (int64_t)(fz_u64(f) % ((uint64_t)1 << 40));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    static fs_quantile q;
    int64_t window = (int64_t)fz_range(&f, 0, (uint64_t)1 << 40);
    if (fs_quantile_init(&q, window) < 0) {
        FZ_CHECK(window < 2);
        return 0;
    }
    int64_t slot_ns = window / 2;
    int64_t now = (int64_t)fz_range(&f, 0, (uint64_t)1 << 50);
    int64_t head = 0;       /* the model's newest slot */
    size_t n = 0;
    while (fz_more(&f) && n < MAX_SAMPLES) {
        uint8_t op = fz_u8(&f) % 4;
        if (op == 0) {
            fz_wait(&f, &now, slot_ns);
            continue;
        }
        int64_t idx = now / slot_ns;
        if (idx > head) {
            head = idx;
        }
        if (op == 1) {
            int64_t v = sample_value(&f);
            fs_quantile_record(&q, now, v);
            samples[n].slot = head;
            samples[n].value = v;
            n++;
            continue;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (head - samples[i].slot < 2) {
                sorted[m++] = samples[i].value;
            }
        }
        if (op == 2) {
            FZ_CHECK(fs_quantile_count(&q, now) == m);
            continue;
        }
        double p = (double)(fz_u16(&f) % 1000 + 1) / 1000.0;
        int64_t got = fs_quantile_value(&q, now, p);
        if (m == 0) {
            FZ_CHECK(got == -1);
            continue;
        }
        qsort(sorted, m, sizeof sorted[0], cmp64);
        double r = ceil(p * (double)m);
        size_t rank = r < 1.0 ? 1 : (r >= (double)m ? m : (size_t)r);
        int64_t v = sorted[rank - 1];
        FZ_CHECK(got == fs_quantile_bucket_upper(fs_quantile_bucket(v)));
        int64_t top = fs_quantile_bucket_upper(FS_Q_BUCKETS - 1);
        if (v >= 1024 && v <= top) {
            FZ_CHECK(got >= v && got - v <= v / 8);
        }
        else if (v < 1024) {
            FZ_CHECK(got == fs_quantile_bucket_upper(0));    /* below 2^10 shares bucket 0 */
        }
        else {
            FZ_CHECK(got == top);
        }
    }
    return 0;
}
