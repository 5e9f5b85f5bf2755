/*
 * odirect_swapout: does an O_DIRECT read land in the page the process sees,
 * while that page is being swapped out and written to?
 *
 * One anonymous private page is the target of repeated 512-byte O_DIRECT
 * reads from a scratch block device that holds zeros. Before each read the
 * target bytes are filled with a pattern; after it they must be zeros. At the
 * same time other threads keep paging the page out (MADV_PAGEOUT), keep
 * writing to another part of the same page (write faults that do not touch
 * the bytes being read), and keep memory under pressure. If the kernel lost
 * the page's "exclusive" marker across swapout, a write fault can copy the
 * page while the read's DMA still targets the old one: the read "succeeds"
 * but the process still sees the pattern. That is a detection.
 *
 * Bounded by --duration=SECONDS and --iterations=N (0: no limit); the device
 * comes from --blockdev=PATH, set by the lab. Prints one result line:
 *   result: iterations=N pageouts=N detections=N elapsed=S first_detection=S
 * (first_detection: seconds until the first corruption was seen, -1 if none).
 * Exit codes (kselftest): 0 no corruption seen, 1 corruption seen, 4 skip
 * (no swap, no device, O_DIRECT refused), 3 the test could not run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "lab_testcase.h"

#define SECTOR 512
#define PATTERN 0xa5

static atomic_int stop;
/* A word-sized counter: 32-bit mips, ppc, m68k and sh4 have no 64-bit atomics without libatomic. */
static atomic_ulong pageouts;

struct shared {
	unsigned char *page;
	size_t page_size;
	unsigned char *pressure;
	uint64_t pressure_size;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A value from /proc/meminfo in bytes (64-bit: 32-bit guests overflow size_t math). */
static uint64_t meminfo_bytes(const char *key)
{
	char line[256];
	uint64_t value = 0;
	size_t len = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, len) == 0 && line[len] == ':') {
			value = strtoull(line + len + 1, NULL, 10) * 1024ULL;
			break;
		}
	}
	fclose(f);
	return value;
}

static void *pageout_loop(void *arg)
{
	struct shared *s = arg;
	while (!atomic_load(&stop)) {
		if (madvise(s->page, s->page_size, MADV_PAGEOUT) == 0)
			atomic_fetch_add(&pageouts, 1);
	}
	return NULL;
}

/* Write faults on the second half of the page: never the bytes being read. */
static void *writer_loop(void *arg)
{
	struct shared *s = arg;
	volatile unsigned char *other = s->page + s->page_size / 2;
	size_t i = 0;
	while (!atomic_load(&stop)) {
		other[i] = (unsigned char)i;
		i = (i + 1) % (s->page_size / 2);
	}
	return NULL;
}

/* Touch a buffer sized from MemAvailable and push it out too, so reclaim keeps running. */
static void *pressure_loop(void *arg)
{
	struct shared *s = arg;
	while (!atomic_load(&stop)) {
		for (uint64_t off = 0; off < s->pressure_size && !atomic_load(&stop); off += s->page_size)
			s->pressure[off] = (unsigned char)off;
		madvise(s->pressure, (size_t)s->pressure_size, MADV_PAGEOUT);
	}
	return NULL;
}

static int swap_enabled(void)
{
	return meminfo_bytes("SwapTotal") > 0;
}

static const char *option(int argc, char **argv, const char *name, const char *fallback)
{
	size_t len = strlen(name);
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--", 2) == 0 && strncmp(argv[i] + 2, name, len) == 0 && argv[i][2 + len] == '=')
			return argv[i] + 3 + len;
	return fallback;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	double duration = atof(option(argc, argv, "duration", "30"));
	uint64_t max_iterations = strtoull(option(argc, argv, "iterations", "0"), NULL, 10);
	const char *device = option(argc, argv, "blockdev", NULL);

	if (!device) {
		printf("SKIP: no block device given (--blockdev=PATH)\n");
		return EXIT_SKIP;
	}
	if (!swap_enabled()) {
		printf("SKIP: no swap: pages cannot be swapped out\n");
		return EXIT_SKIP;
	}
	int fd = open(device, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		printf("SKIP: cannot open %s with O_DIRECT: %s\n", device, strerror(errno));
		return EXIT_SKIP;
	}

	struct shared s = { .page_size = (size_t)sysconf(_SC_PAGESIZE) };
	s.page = mmap(NULL, s.page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s.page == MAP_FAILED) {
		printf("ERROR: mmap: %s\n", strerror(errno));
		return EXIT_BROKEN;
	}
	madvise(s.page, s.page_size, MADV_NOHUGEPAGE);
	memset(s.page, 1, s.page_size);

	/* A quarter of what is available, at most 64 MiB: pressure without the OOM killer. */
	uint64_t available = meminfo_bytes("MemAvailable");
	s.pressure_size = available / 4;
	if (s.pressure_size > 64ULL << 20)
		s.pressure_size = 64ULL << 20;
	s.pressure_size -= s.pressure_size % s.page_size;
	if (s.pressure_size) {
		s.pressure = mmap(NULL, (size_t)s.pressure_size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (s.pressure == MAP_FAILED)
			s.pressure_size = 0;
	}

	/* The device must really honour O_DIRECT: one read into the page must work. */
	if (pread(fd, s.page, SECTOR, 0) != SECTOR) {
		printf("SKIP: O_DIRECT read of %s refused: %s\n", device, strerror(errno));
		return EXIT_SKIP;
	}
	for (int i = 0; i < SECTOR; i++) {
		if (s.page[i] != 0) {
			printf("ERROR: %s does not hold zeros at offset 0 (byte %d is 0x%02x)\n", device, i, s.page[i]);
			return EXIT_BROKEN;
		}
	}

	pthread_t threads[3];
	int started = 0;
	void *(*loops[3])(void *) = { pageout_loop, writer_loop, pressure_loop };
	for (int i = 0; i < (s.pressure_size ? 3 : 2); i++) {
		if (pthread_create(&threads[i], NULL, loops[i], &s) != 0) {
			printf("ERROR: pthread_create failed\n");
			atomic_store(&stop, 1);
			break;
		}
		started++;
	}

	uint64_t iterations = 0, detections = 0, read_errors = 0;
	double begin = now(), elapsed = 0, first_detection = -1;
	while (!atomic_load(&stop)) {
		memset(s.page, PATTERN, SECTOR);
		ssize_t got = pread(fd, s.page, SECTOR, 0);
		if (got != SECTOR) {
			read_errors++;
		} else {
			for (int i = 0; i < SECTOR; i++) {
				if (s.page[i] != 0) {
					if (!detections)
						first_detection = now() - begin;
					detections++;
					break;
				}
			}
		}
		iterations++;
		elapsed = now() - begin;
		if ((max_iterations && iterations >= max_iterations) || elapsed >= duration)
			break;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	close(fd);

	printf("result: iterations=%" PRIu64 " pageouts=%" PRIu64 " detections=%" PRIu64
	       " elapsed=%.1f first_detection=%.2f\n",
	       iterations, (uint64_t)atomic_load(&pageouts), detections, elapsed, first_detection);
	if (read_errors) {
		printf("ERROR: %" PRIu64 " O_DIRECT reads failed\n", read_errors);
		return EXIT_BROKEN;
	}
	if (detections) {
		printf("FAIL: the O_DIRECT read data did not reach the page %" PRIu64 " times in %" PRIu64 " iterations\n",
		       detections, iterations);
		return EXIT_FAIL;
	}
	printf("PASS: no corruption in %" PRIu64 " iterations\n", iterations);
	return EXIT_PASS;
}
