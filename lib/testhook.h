/* testhook: the test suite's fault-injection points (gates, a slow link).
 * They exist only in test builds: compiled with -DVMCKPT_TEST_HOOKS (the
 * sanitizer build `make check` runs), each reads its setting from the
 * environment; in every other build they are empty inline functions, so no
 * production path reads the environment or waits.
 *
 * A gate makes a state certain instead of likely: a test creates the gate
 * file, the code stops at the hook and says so by creating GATE.TAG, the test
 * sees that file (the state is now certain: an upload in flight, say), acts,
 * and removes the gate to let the code go on. */
#ifndef VMCKPT_TESTHOOK_H
#define VMCKPT_TESTHOOK_H

#ifdef VMCKPT_TEST_HOOKS
/* The integer in environment variable `name`, or 0 when it is not set. */
long testhook_num(const char *name);
/* The integer in the file that environment variable `name` names, read at
 * each call (0 when unset or unreadable): a setting a test changes while the
 * program runs (a clock step, a slow store). */
long testhook_file_num(const char *name);
/* When environment variable `name` names a file that exists: creates
 * "<file>.<tag>", then waits (polling) until the file is gone. */
void testhook_gate(const char *name, const char *tag);
#else
static inline long testhook_num(const char *name) { (void)name; return 0; }
static inline long testhook_file_num(const char *name) { (void)name; return 0; }
static inline void testhook_gate(const char *name, const char *tag) { (void)name; (void)tag; }
#endif

#endif
