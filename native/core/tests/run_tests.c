#include <stdarg.h>
#include <stdio.h>

#include "runner.h"

int fs_test_failures;
static const char *current;

void fs_test_fail(const char *file, int line, const char *fmt, ...)
{
    /* Cap the noise from a check inside a loop. */
    if (fs_test_failures++ >= 5)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "  FAIL %s (%s:%d): ", current, file, line);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

int main(void)
{
    const fs_test *suites[] = {rng_tests,      backoff_tests,  budget_tests,   heap_tests,
                               gcra_tests,     failfast_tests, hash_tests,     cache_tests,
                               bulkhead_tests, quantile_tests, swlog_tests,    keytab_tests,
                               breaker_tests,  edge_tests,     ptrmap_tests,
                               alimit_tests,   lathist_tests};
    int passed = 0, failed = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        for (const fs_test *t = suites[s]; t->fn; t++) {
            current = t->name;
            fs_test_failures = 0;
            t->fn();
            if (fs_test_failures) {
                failed++;
                printf("FAIL %s (%d failed checks)\n", t->name, fs_test_failures);
            } else {
                passed++;
                printf("ok   %s\n", t->name);
            }
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
