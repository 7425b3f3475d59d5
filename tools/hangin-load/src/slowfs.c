/* hangin-load slow-disk shim: LD_PRELOADed into the server, it delays every real
 * fsync/fdatasync/sync_file_range/syncfs by HANGIN_LOAD_FSYNC_DELAY_MS milliseconds (an SD card
 * takes 5-20 ms per flush where a VM disk takes well under 1 ms), then calls the real function.
 * It prints one line when the first call is delayed and a count at exit, so the load tool can
 * check the delays really happened. Built by the load tool with the system `cc`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ns;
static atomic_ulong calls;

/* Read once at load time, before the server starts its threads. */
__attribute__((constructor)) static void init(void) {
    const char *v = getenv("HANGIN_LOAD_FSYNC_DELAY_MS");
    delay_ns = v ? (long)(atof(v) * 1e6) : 0;
}

static void slow(void) {
    if (atomic_fetch_add(&calls, 1) == 0)
        fprintf(stderr, "hangin-load slowfs: first flush delayed by %ld us\n", delay_ns / 1000);
    if (delay_ns > 0) {
        struct timespec ts = {delay_ns / 1000000000L, delay_ns % 1000000000L};
        int saved = errno;
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
        errno = saved;
    }
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "hangin-load slowfs: %lu flushes delayed\n", atomic_load(&calls));
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
    static int (*real)(int, off_t, off_t, unsigned int);
    if (!real) real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    slow();
    return real(fd, off, n, flags);
}

int syncfs(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
    slow();
    return real(fd);
}
