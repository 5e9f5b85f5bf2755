/*
 * swp_exclusive: does an anonymous page keep its "exclusive" marker across
 * swapout?
 *
 * A private anonymous page is referenced by a pipe (vmsplice takes a plain
 * page reference), then paged out with MADV_PAGEOUT. Its PTE becomes a swap
 * PTE while the page itself stays in the swap cache, held by the pipe. On the
 * next write fault the kernel may reuse the page only if the swap PTE
 * remembered that the page was exclusive to this process. If the marker was
 * lost, the fault copies the page (COW) and the pipe keeps the old one: the
 * bytes read back from the pipe are the stale ones.
 *
 * A control run does the same with a fork() after pageout: fork must clear
 * the marker, so there the page must be replaced. If the control does not see
 * a replacement, the detector cannot tell the cases apart and the result is
 * an error, not a pass.
 *
 * Exit codes (kselftest): 0 pass, 1 fail, 4 skip; 3 means the test itself
 * could not judge (the lab reports ERROR).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab_testcase.h"

#define PAGEMAP_SWAPPED (1ULL << 62)
#define PAGEMAP_PRESENT (1ULL << 63)

enum outcome { KEPT, REPLACED, NOT_SWAPPED, BROKEN };

static const unsigned char OLD_BYTE = 0xa5;
static const unsigned char NEW_BYTE = 0x5a;

static void broken(const char *what)
{
	printf("ERROR: %s: %s\n", what, strerror(errno));
}

/* Read the pagemap entry of one virtual address; the offset is 64-bit even
 * on 32-bit guests (built with _FILE_OFFSET_BITS=64). */
static int pagemap_entry(const void *addr, size_t page_size, uint64_t *entry)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -1;
	off_t offset = (off_t)((uintptr_t)addr / page_size) * (off_t)sizeof(*entry);
	ssize_t got = pread(fd, entry, sizeof(*entry), offset);
	close(fd);
	return got == (ssize_t)sizeof(*entry) ? 0 : -1;
}

/* One round of the mechanism. With fork_after_pageout, a child is forked
 * (and exits) while the page is swapped out, which must clear the marker. */
static enum outcome run_round(size_t page_size, int fork_after_pageout)
{
	enum outcome result = BROKEN;
	int fds[2] = { -1, -1 };
	unsigned char *page = mmap(NULL, page_size, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		broken("mmap");
		return BROKEN;
	}
	/* A THP would not be paged out as this one page; kernels without THP
	 * refuse the advice, which is fine. */
	madvise(page, page_size, MADV_NOHUGEPAGE);
	memset(page, OLD_BYTE, page_size);

	if (pipe(fds) != 0) {
		broken("pipe");
		goto out;
	}
	struct iovec iov = { .iov_base = page, .iov_len = page_size };
	if (vmsplice(fds[1], &iov, 1, 0) != (ssize_t)page_size) {
		broken("vmsplice");
		goto out;
	}
	if (madvise(page, page_size, MADV_PAGEOUT) != 0) {
		broken("madvise(MADV_PAGEOUT)");
		goto out;
	}
	uint64_t entry = 0;
	if (pagemap_entry(page, page_size, &entry) != 0) {
		broken("read /proc/self/pagemap");
		goto out;
	}
	if (!(entry & PAGEMAP_SWAPPED) || (entry & PAGEMAP_PRESENT)) {
		result = NOT_SWAPPED;
		goto out;
	}
	if (fork_after_pageout) {
		pid_t child = fork();
		if (child < 0) {
			broken("fork");
			goto out;
		}
		if (child == 0)
			_exit(0);
		if (waitpid(child, NULL, 0) != child) {
			broken("waitpid");
			goto out;
		}
	}

	page[0] = NEW_BYTE; /* the write fault under test */

	unsigned char seen = 0;
	if (read(fds[0], &seen, 1) != 1) {
		broken("read pipe");
		goto out;
	}
	if (seen == NEW_BYTE)
		result = KEPT;
	else if (seen == OLD_BYTE)
		result = REPLACED;
	else
		printf("ERROR: pipe returned unexpected byte 0x%02x\n", seen);
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	munmap(page, page_size);
	return result;
}

int main(void)
{
	long page_size = sysconf(_SC_PAGESIZE);
	if (page_size <= 0) {
		broken("sysconf(_SC_PAGESIZE)");
		return EXIT_BROKEN;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("page size %ld\n", page_size);

	enum outcome control = run_round((size_t)page_size, 1);
	if (control == NOT_SWAPPED) {
		printf("SKIP: page not swapped out: is swap enabled?\n");
		return EXIT_SKIP;
	}
	if (control != REPLACED) {
		if (control == KEPT)
			printf("ERROR: self-check: page was kept after fork, so the detector cannot see a replacement\n");
		return EXIT_BROKEN;
	}
	printf("self-check: fork after pageout makes the write fault copy the page, as expected\n");

	switch (run_round((size_t)page_size, 0)) {
	case KEPT:
		printf("PASS: page was not replaced during COW\n");
		return EXIT_PASS;
	case REPLACED:
		printf("FAIL: page was replaced during COW\n");
		return EXIT_FAIL;
	case NOT_SWAPPED:
		printf("SKIP: page not swapped out: is swap enabled?\n");
		return EXIT_SKIP;
	default:
		return EXIT_BROKEN;
	}
}
