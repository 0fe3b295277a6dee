/* The udp-echo unikernel's work as a process: UDP echo (RFC 862) on port 7.
 * It says it listens (the marker the harness waits for) only once bound, and
 * writes nothing after, so nobody needs to drain its stdout. */
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(7)};
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udp-echo");
        return 1;
    }
    static const char up[] = "udp-echo: listening on 0.0.0.0:7\n";
    if (write(1, up, sizeof up - 1) != sizeof up - 1)
        return 1;
    static char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n >= 0)
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
}
