/* The TCP unikernels' work as processes, one source for three servers chosen
 * at compile time (-DSERVER=...), each a single thread on epoll like its
 * unikernel, which runs one vCPU:
 *   SERVER_ECHO  tcp-echo, port 7: every byte goes back (RFC 862);
 *   SERVER_SINK  sink, port 9: every byte is dropped (RFC 863); the connection
 *                closes when the peer's does, which is when the sender knows
 *                that everything arrived;
 *   SERVER_HTTP  httpd, port 80: every HTTP/1.1 request (pipelined ones too)
 *                gets the httpd guest's body; connections stay open.
 * It says it listens (the marker the harness waits for) only once listening,
 * and writes nothing to stdout after. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVER_ECHO 1
#define SERVER_SINK 2
#define SERVER_HTTP 3

#if SERVER == SERVER_ECHO
#define NAME "tcp-echo"
#define PORT 7
#elif SERVER == SERVER_SINK
#define NAME "sink"
#define PORT 9
#elif SERVER == SERVER_HTTP
#define NAME "httpd"
#define PORT 80
#else
#error "compile with -DSERVER=SERVER_ECHO, SERVER_SINK or SERVER_HTTP"
#endif

#define BODY "Hello from a lightvm unikernel!\n"
#define MAX_FDS 65536
_Static_assert(sizeof BODY - 1 == 32, "the Content-Length below");

static char buf[256 << 10];
/* How much of "\r\n\r\n" each HTTP connection has seen at the end of its data. */
static unsigned char request_end[MAX_FDS];

#if SERVER != SERVER_SINK
static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}
#endif

/* Serves what one readable connection sent; -1 when it is done. */
static int serve(int fd) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0)
        return -1;
#if SERVER == SERVER_ECHO
    return write_all(fd, buf, (size_t)n);
#elif SERVER == SERVER_SINK
    return 0;
#else
    static const char response[] = "HTTP/1.1 200 OK\r\nServer: lightvm-bench\r\n"
                                   "Content-Type: text/plain\r\nContent-Length: 32\r\n\r\n" BODY;
    static char out[64 * (sizeof response - 1)];
    size_t queued = 0;
    unsigned char seen = request_end[fd];
    for (ssize_t i = 0; i < n; i++) {
        char c = buf[i];
        seen = (c == "\r\n\r\n"[seen]) ? seen + 1 : (c == '\r');
        if (seen == 4) {
            seen = 0;
            if (queued + sizeof response - 1 > sizeof out) {
                if (write_all(fd, out, queued) < 0)
                    return -1;
                queued = 0;
            }
            memcpy(out + queued, response, sizeof response - 1);
            queued += sizeof response - 1;
        }
    }
    request_end[fd] = seen;
    return queued ? write_all(fd, out, queued) : 0;
#endif
}

int main(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    if (listener < 0 || epoll < 0 ||
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 128) < 0 ||
        epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event) < 0) {
        perror(NAME);
        return 1;
    }
    char line[64];
    int len = snprintf(line, sizeof line, "%s: listening on 0.0.0.0:%d\n", NAME, PORT);
    if (len <= 0 || write(1, line, (size_t)len) != len)
        return 1;
    struct epoll_event ready[64];
    for (;;) {
        int count = epoll_wait(epoll, ready, 64, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listener) {
                int conn = accept(listener, NULL, NULL);
                if (conn < 0)
                    continue;
                if (conn >= MAX_FDS) {
                    close(conn);
                    continue;
                }
                setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                request_end[conn] = 0;
                struct epoll_event in = {.events = EPOLLIN, .data.fd = conn};
                if (epoll_ctl(epoll, EPOLL_CTL_ADD, conn, &in) < 0)
                    close(conn);
            } else if (serve(fd) < 0) {
                close(fd);
            }
        }
    }
}
