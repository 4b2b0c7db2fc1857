/* Conformance victim: a pseudo-terminal pair with both ends in the tree.
 * compat-object: pseudo-terminal pair (termios, window size, packet mode, lock, queued bytes both ways, controlling terminal)
 * compat-dump-args: --tree
 *
 * The victim is tests/workloads/pty_pair.c (also used by tests/tests/pty.rs): the parent holds
 * the master in packet mode, a child leads a session whose controlling terminal is the slave
 * and answers each line; bytes are queued both ways between checks (a partial line among
 * them), a second pair stays locked. check() reads the queued bytes exactly, completes the
 * line, asks the child whether the slave is still its controlling terminal and compares the
 * settings, window sizes, packet mode and locks.
 */
#include "../workloads/pty_pair.c"
