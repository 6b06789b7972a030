/* The wall clock of one process, stepped or slewed from outside, as NTP steps
 * and slews a gateway's clock (simulator/wallstep.py builds and drives it).
 *
 * Preloaded (LD_PRELOAD) into `cabguard run`, it adds an offset to
 * CLOCK_REALTIME (clock_gettime, gettimeofday, time) and leaves every other
 * clock alone: NTP never moves CLOCK_MONOTONIC, on which the scan loop runs.
 * The offset is read from the file named by CABGUARD_WALLSTEP_FILE (one
 * number: seconds, may be negative or fractional) at most every 100 ms.
 * Debian's libfaketime does the same job but, told to leave the monotonic
 * clock alone (FAKETIME_DONT_FAKE_MONOTONIC=1), makes CPython 3.11's
 * time.sleep fail with EINVAL (its clock_nanosleep wrapper).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*gettime_fn)(clockid_t, struct timespec *);

static long long offset_ns;          /* the step now in force */
static long long next_read_ns;       /* monotonic time of the next look at the file */

static gettime_fn real_gettime(void)
{
    static gettime_fn real;
    if (!real)
        real = (gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real;
}

static long long offset(void)
{
    struct timespec mono;
    const char *path = getenv("CABGUARD_WALLSTEP_FILE");
    if (!path || real_gettime()(CLOCK_MONOTONIC, &mono) != 0)
        return __atomic_load_n(&offset_ns, __ATOMIC_RELAXED);
    long long now = mono.tv_sec * 1000000000LL + mono.tv_nsec;
    if (now >= __atomic_load_n(&next_read_ns, __ATOMIC_RELAXED)) {
        __atomic_store_n(&next_read_ns, now + 100000000LL, __ATOMIC_RELAXED);
        FILE *f = fopen(path, "r");
        double seconds;
        if (f) {
            if (fscanf(f, "%lf", &seconds) == 1)
                __atomic_store_n(&offset_ns, (long long)(seconds * 1e9), __ATOMIC_RELAXED);
            fclose(f);
        }
    }
    return __atomic_load_n(&offset_ns, __ATOMIC_RELAXED);
}

static void shift(struct timespec *ts)
{
    long long ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
    if (ts->tv_nsec < 0) {
        ts->tv_nsec += 1000000000LL;
        ts->tv_sec -= 1;
    }
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    int done = real_gettime()(clock, ts);
    if (done == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        shift(ts);
    return done;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
