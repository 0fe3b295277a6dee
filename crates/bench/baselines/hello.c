/* The process baseline for the boot benchmark: the same work as the hello
 * unikernel (print one line, exit 0), as a static binary so that no dynamic
 * loader runs — the fastest a process can start. */
#include <unistd.h>

int main(void) {
    static const char message[] = "Hello from a process!\n";
    return write(1, message, sizeof message - 1) == sizeof message - 1 ? 0 : 1;
}
