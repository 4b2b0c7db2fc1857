/* A POSIX timer on CLOCK_MONOTONIC with SIGEV_SIGNAL (SIGRTMIN+1, sival 7001), every 25 ms: timer_gettime
 * reads the interval back, and the handler keeps getting the signal with si_code SI_TIMER, the
 * value and the timer's id.
 * compat-object: POSIX timer on CLOCK_MONOTONIC, SIGEV_SIGNAL
 * compat-libs: -lrt
 */
#define TIMER_CLOCK CLOCK_MONOTONIC
#include "tmr_posix_clock.h"
