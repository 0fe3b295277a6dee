/* The idle workload of the memory and density suites, as a process: say that
 * main runs (the marker the harness times), then wait without using CPU until
 * killed — the same as the idle unikernel, which waits in the poll hypercall. */
#include <unistd.h>

int main(void) {
    static const char message[] = "idle: up, waiting\n";
    if (write(1, message, sizeof message - 1) != sizeof message - 1)
        return 1;
    for (;;)
        pause();
}
