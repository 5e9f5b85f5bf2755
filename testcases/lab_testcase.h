/* Shared by the lab's testcases: kselftest exit codes and syscall fallbacks. */
#ifndef LAB_TESTCASE_H
#define LAB_TESTCASE_H

#define EXIT_PASS 0
#define EXIT_FAIL 1
#define EXIT_BROKEN 3 /* the test could not judge: the lab reports ERROR */
#define EXIT_SKIP 4

/* Older libc headers lack it; the kernel has it since 5.4. */
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#endif
