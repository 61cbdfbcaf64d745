/* vkcounter: the test guest's counter (vmckpt.work=counter) in one process.
 *
 * A counter kept in memory and written to block 0 of /dev/vda at every step,
 * with O_DIRECT (the disk itself, not the guest's page cache), and checked
 * against the disk before each step: after a restore the two must agree, as
 * a checkpoint takes memory and disk at one instant. Two steps a second.
 * Block 0 holds the value in decimal and a newline, then zeros (a fresh disk,
 * all zeros, holds 0). Lines on stdout (the serial console):
 *   counter: start at N | counter N | counter: MISMATCH mem=N disk=TEXT
 *
 * It was a shell loop: under TCG each process a step started cost the host
 * about 8 ms of CPU, most of what a counting guest cost (3.5% of a core
 * against 0.5% for an idle one), and the test suite keeps many such guests.
 * Built static by guest/build.sh (the initramfs has no libc). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096

static void say(const char *line)
{
    size_t n = strlen(line);
    while (n > 0) {
        ssize_t w = write(1, line, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        line += w;
        n -= (size_t)w;
    }
}

/* The first line of block 0 into text ("" when the read fails). */
static void disk_read(int fd, char *blk, char *text, size_t cap)
{
    text[0] = 0;
    if (pread(fd, blk, BLOCK, 0) != BLOCK)
        return;
    size_t n = 0;
    while (n < BLOCK && n + 1 < cap && blk[n] != '\n' && blk[n] != 0)
        n++;
    memcpy(text, blk, n);
    text[n] = 0;
}

static void disk_write(int fd, char *blk, unsigned long v)
{
    memset(blk, 0, BLOCK);
    snprintf(blk, BLOCK, "%lu\n", v);
    if (pwrite(fd, blk, BLOCK, 0) != BLOCK) {
        char line[96];
        snprintf(line, sizeof(line), "counter: cannot write /dev/vda: %s\n", strerror(errno));
        say(line);
    }
}

int main(void)
{
    char *blk, d[64], line[160];
    int fd = open("/dev/vda", O_RDWR | O_DIRECT);
    if (fd < 0 || posix_memalign((void **)&blk, BLOCK, BLOCK) != 0) {
        snprintf(line, sizeof(line), "counter: cannot open /dev/vda: %s\n", strerror(errno));
        say(line);
        return 1;
    }
    disk_read(fd, blk, d, sizeof(d));
    unsigned long i = strtoul(d, NULL, 10);
    snprintf(line, sizeof(line), "counter: start at %lu\n", i);
    say(line);
    for (;;) {
        char mem[32];
        disk_read(fd, blk, d, sizeof(d));
        snprintf(mem, sizeof(mem), "%lu", i);
        /* (a fresh disk holds nothing where the counter is 0: that agrees) */
        if (strcmp(d, mem) != 0 && !(i == 0 && d[0] == 0)) {
            snprintf(line, sizeof(line), "counter: MISMATCH mem=%lu disk=%s\n", i, d);
            say(line);
        }
        i++;
        disk_write(fd, blk, i);
        snprintf(line, sizeof(line), "counter %lu\n", i);
        say(line);
        struct timespec half = {0, 500000000L};
        while (nanosleep(&half, &half) != 0 && errno == EINTR)
            ;
    }
}
