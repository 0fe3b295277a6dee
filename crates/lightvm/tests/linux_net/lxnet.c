/* What a Linux program sees of pipes, eventfds, socketpairs, epoll, poll,
 * select and IPv4 sockets: one line per check, the same on Linux and on
 * lightvm's personality (the test runs it on both and compares).
 *
 * It is a client only: servers run in the test's network namespace at
 * 10.0.0.1 (TCP echo on ECHO_PORT, UDP echo on UDP_PORT, nothing on
 * CLOSED_PORT). Run with the address to reach them at as argv[1]. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define ECHO_PORT 7777
#define UDP_PORT 7778
#define CLOSED_PORT 7779
#define BIND_PORT 5555

static const char *server;

static const char *name_of(int e) {
    switch (e) {
    case 0: return "0";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EPIPE: return "EPIPE";
    case EEXIST: return "EEXIST";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EINPROGRESS: return "EINPROGRESS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EISCONN: return "EISCONN";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOTCONN: return "ENOTCONN";
    case ENOTSOCK: return "ENOTSOCK";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EFAULT: return "EFAULT";
    case ELOOP: return "ELOOP";
    case ECONNRESET: return "ECONNRESET";
    case EDOM: return "EDOM";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case ECONNABORTED: return "ECONNABORTED";
    case EALREADY: return "EALREADY";
    case EMSGSIZE: return "EMSGSIZE";
    default: return "other";
    }
}

/* Prints the result of a call: its value, or -1 and the errno's name. */
#define SHOW(label, expr)                                                        \
    do {                                                                         \
        errno = 0;                                                               \
        long r_ = (long)(expr);                                                  \
        printf("%s: %ld %s\n", label, r_, r_ < 0 ? name_of(errno) : "");         \
    } while (0)

static struct sockaddr_in at(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static unsigned short revents(int fd, short events, int timeout) {
    struct pollfd p = {.fd = fd, .events = events};
    if (poll(&p, 1, timeout) < 0)
        return 0xffff;
    return (unsigned short)p.revents;
}

static int epoll_count(int ep, int timeout, unsigned *events) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, timeout);
    if (events)
        *events = n > 0 ? ev[0].events : 0;
    return n;
}

static void *pipe_writer(void *arg) {
    int fd = *(int *)arg;
    static char chunk[7000];
    memset(chunk, 'x', sizeof chunk);
    long total = 0;
    while (total < 200000) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n <= 0)
            break;
        total += n;
    }
    close(fd);
    return (void *)total;
}

static void pipes(void) {
    int p[2];
    char buf[64];
    SHOW("pipe2", pipe2(p, O_CLOEXEC | O_NONBLOCK));
    SHOW("pipe2 cloexec", fcntl(p[0], F_GETFD) & FD_CLOEXEC);
    SHOW("pipe2 nonblock", (fcntl(p[1], F_GETFL) & O_NONBLOCK) != 0);
    struct stat st;
    fstat(p[0], &st);
    printf("pipe is fifo: %d\n", S_ISFIFO(st.st_mode));
    SHOW("pipe empty read", read(p[0], buf, sizeof buf));
    SHOW("pipe poll empty", revents(p[0], POLLIN, 0));
    SHOW("pipe write", write(p[1], "abc", 3));
    int avail = -1;
    ioctl(p[0], FIONREAD, &avail);
    printf("pipe FIONREAD: %d\n", avail);
    SHOW("pipe poll data", revents(p[0], POLLIN, 0));
    SHOW("pipe read", read(p[0], buf, sizeof buf));
    SHOW("pipe read on write end", read(p[1], buf, 1));
    SHOW("pipe write on read end", write(p[0], "x", 1));
    close(p[1]);
    SHOW("pipe poll no writer", revents(p[0], POLLIN, 0));
    SHOW("pipe eof", read(p[0], buf, sizeof buf));
    close(p[0]);

    signal(SIGPIPE, SIG_IGN);
    SHOW("pipe", pipe(p));
    close(p[0]);
    SHOW("pipe poll no reader", revents(p[1], POLLOUT, 0));
    SHOW("pipe write no reader", write(p[1], "x", 1));
    close(p[1]);

    /* Blocking both ways, across threads: more than the pipe holds. */
    pipe(p);
    pthread_t writer;
    pthread_create(&writer, NULL, pipe_writer, &p[1]);
    long got = 0;
    ssize_t n;
    static char big[16384];
    while ((n = read(p[0], big, sizeof big)) > 0)
        got += n;
    void *sent;
    pthread_join(writer, &sent);
    printf("pipe threads: read %ld of %ld, last read %zd\n", got, (long)sent, n);
    close(p[0]);
}

static void eventfds(void) {
    uint64_t v;
    int e = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
    v = 3;
    SHOW("eventfd write", write(e, &v, 8));
    for (int i = 0; i < 4; i++) {
        v = 0;
        long r = read(e, &v, 8);
        printf("eventfd semaphore read: %ld %s value %llu\n", r, r < 0 ? name_of(errno) : "",
               (unsigned long long)v);
    }
    SHOW("eventfd poll zero", revents(e, POLLIN | POLLOUT, 0));
    close(e);
    e = eventfd(2, 0);
    v = 5;
    write(e, &v, 8);
    SHOW("eventfd poll", revents(e, POLLIN | POLLOUT, 0));
    v = 0;
    read(e, &v, 8);
    printf("eventfd sum: %llu\n", (unsigned long long)v);
    SHOW("eventfd short read", read(e, &v, 4));
    v = ~0ULL;
    SHOW("eventfd max write", write(e, &v, 8));
    SHOW("eventfd bad flags", eventfd(0, 0x1234));
    close(e);
}

static void socketpairs(void) {
    int sv[2];
    char buf[64] = {0};
    SHOW("socketpair", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int unused[2];
    SHOW("socketpair inet", socketpair(AF_INET, SOCK_STREAM, 0, unused));
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &type, &len);
    len = sizeof domain;
    getsockopt(sv[0], SOL_SOCKET, SO_DOMAIN, &domain, &len);
    printf("socketpair type %d domain %d\n", type, domain);
    SHOW("socketpair write", write(sv[0], "ping", 4));
    SHOW("socketpair read", read(sv[1], buf, sizeof buf));
    SHOW("socketpair send back", send(sv[1], "pong", 4, 0));
    SHOW("socketpair recv peek", recv(sv[0], buf, sizeof buf, MSG_PEEK));
    SHOW("socketpair recv", recv(sv[0], buf, sizeof buf, 0));
    printf("socketpair got: %.4s\n", buf);
    SHOW("socketpair recv dontwait", recv(sv[0], buf, sizeof buf, MSG_DONTWAIT));
    SHOW("socketpair shutdown", shutdown(sv[0], SHUT_WR));
    SHOW("socketpair peer eof", read(sv[1], buf, sizeof buf));
    SHOW("socketpair peer poll", revents(sv[1], POLLIN | POLLRDHUP, 0) & (POLLIN | POLLRDHUP));
    SHOW("socketpair write after shutdown", write(sv[0], "x", 1));
    SHOW("socketpair other way", write(sv[1], "ok", 2));
    SHOW("socketpair other way read", read(sv[0], buf, sizeof buf));
    close(sv[1]);
    SHOW("socketpair peer gone poll", revents(sv[0], POLLIN, 0) & (POLLIN | POLLHUP));
    SHOW("socketpair peer gone read", read(sv[0], buf, sizeof buf));
    close(sv[0]);
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    close(sv[1]);
    SHOW("socketpair write to closed", write(sv[0], "x", 1));
    close(sv[0]);
}

static void epolls(void) {
    int p[2];
    char buf[64];
    unsigned events;
    pipe2(p, O_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    SHOW("epoll_create1 bad flags", epoll_create1(1));
    SHOW("epoll_create 0", epoll_create(0));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    SHOW("epoll add", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    SHOW("epoll add again", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    SHOW("epoll mod unknown", epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &ev));
    SHOW("epoll del unknown", epoll_ctl(ep, EPOLL_CTL_DEL, p[1], &ev));
    SHOW("epoll add itself", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    SHOW("epoll bad op", epoll_ctl(ep, 99, p[0], &ev));
    SHOW("epoll bad fd", epoll_ctl(ep, EPOLL_CTL_ADD, 999, &ev));
    SHOW("epoll on pipe fd", epoll_ctl(p[0], EPOLL_CTL_ADD, p[1], &ev));
    int file = open("/tmp/lxnet-file", O_CREAT | O_RDWR | O_TRUNC, 0600);
    SHOW("epoll add regular file", epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev));
    SHOW("epoll wait maxevents 0", epoll_wait(ep, &ev, 0, 0));
    SHOW("epoll wait empty", epoll_count(ep, 0, NULL));
    SHOW("epoll wait timeout", epoll_count(ep, 50, NULL));
    write(p[1], "a", 1);
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 0);
    printf("epoll lt: %d events %#x data %llu\n", n, out.events, (unsigned long long)out.data.u64);
    SHOW("epoll lt again", epoll_count(ep, 0, NULL));
    ev.events = EPOLLIN | EPOLLET;
    SHOW("epoll mod et", epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev));
    SHOW("epoll et after mod", epoll_count(ep, 0, NULL));
    SHOW("epoll et no new edge", epoll_count(ep, 0, NULL));
    write(p[1], "b", 1);
    SHOW("epoll et new data", epoll_count(ep, 0, NULL));
    SHOW("epoll et again", epoll_count(ep, 0, NULL));
    read(p[0], buf, 1);
    SHOW("epoll et partial read", epoll_count(ep, 0, NULL));
    read(p[0], buf, sizeof buf);
    write(p[1], "c", 1);
    SHOW("epoll et after drain", epoll_count(ep, 0, NULL));
    ev.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);
    SHOW("epoll oneshot", epoll_count(ep, 0, NULL));
    SHOW("epoll oneshot again", epoll_count(ep, 0, NULL));
    write(p[1], "d", 1);
    SHOW("epoll oneshot new data", epoll_count(ep, 0, NULL));
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);
    SHOW("epoll oneshot rearmed", epoll_count(ep, 0, NULL));
    read(p[0], buf, sizeof buf);
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);

    /* A nested set is readable while its own set has events. */
    int outer = epoll_create1(0);
    struct epoll_event nested = {.events = EPOLLIN, .data.u64 = 7};
    SHOW("epoll nest", epoll_ctl(outer, EPOLL_CTL_ADD, ep, &nested));
    SHOW("epoll nest loop", epoll_ctl(ep, EPOLL_CTL_ADD, outer, &nested));
    SHOW("epoll nested idle", epoll_count(outer, 0, NULL));
    write(p[1], "e", 1);
    SHOW("epoll nested ready", epoll_count(outer, 0, &events));
    read(p[0], buf, sizeof buf);
    close(outer);

    /* An eventfd, edge-triggered, and a write end with its reader gone. */
    int e = eventfd(0, EFD_NONBLOCK);
    struct epoll_event eev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 9};
    epoll_ctl(ep, EPOLL_CTL_ADD, e, &eev);
    n = epoll_count(ep, 0, &events);
    printf("epoll eventfd first: %d %#x\n", n, events);
    SHOW("epoll eventfd quiet", epoll_count(ep, 0, NULL));
    uint64_t one = 1;
    write(e, &one, 8);
    n = epoll_count(ep, 0, &events);
    printf("epoll eventfd written: %d %#x\n", n, events);
    epoll_ctl(ep, EPOLL_CTL_DEL, e, NULL);
    close(e);

    /* The descriptor's close removes its entry with its last reference. */
    int dup_fd = dup(p[0]);
    close(p[0]);
    write(p[1], "f", 1);
    n = epoll_count(ep, 0, &events);
    printf("epoll after close of a dup'd fd: %d %#x\n", n, events);
    close(dup_fd);
    SHOW("epoll after last close", epoll_count(ep, 0, NULL));
    close(p[1]);

    pipe(p);
    ev.events = EPOLLIN | EPOLLRDHUP;
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    close(p[1]);
    n = epoll_count(ep, 0, &events);
    printf("epoll hup: %d %#x\n", n, events);
    close(p[0]);
    close(file);
    close(ep);
}

static void polls_and_selects(void) {
    int p[2];
    pipe(p);
    write(p[1], "x", 1);
    struct pollfd fds[4] = {
        {.fd = p[0], .events = POLLIN},
        {.fd = p[1], .events = POLLOUT},
        {.fd = 999, .events = POLLIN},
        {.fd = -1, .events = POLLIN},
    };
    int n = poll(fds, 4, 0);
    printf("poll: %d revents %#x %#x %#x %#x\n", n, fds[0].revents, fds[1].revents, fds[2].revents,
           fds[3].revents);
    SHOW("poll nothing", poll(fds + 3, 1, 30));
    volatile nfds_t too_many = (nfds_t)1 << 30;
    SHOW("poll too many", poll(fds, too_many, 0));
    struct timespec ts = {0, 0};
    SHOW("ppoll", ppoll(fds, 2, &ts, NULL));

    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(p[0], &r);
    FD_SET(p[1], &w);
    struct timeval tv = {0, 0};
    n = select(p[1] + 1, &r, &w, NULL, &tv);
    printf("select: %d read %d write %d\n", n, FD_ISSET(p[0], &r), FD_ISSET(p[1], &w));
    char buf[8];
    read(p[0], buf, sizeof buf);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv.tv_usec = 20000;
    SHOW("select timeout", select(p[0] + 1, &r, NULL, NULL, &tv));
    printf("select timeout cleared: %d\n", FD_ISSET(p[0], &r));
    SHOW("select negative nfds", select(-1, NULL, NULL, NULL, &tv));
    /* A closed descriptor below the table's size (Linux ignores those past it). */
    close(60);
    FD_ZERO(&r);
    FD_SET(60, &r);
    tv.tv_usec = 0;
    SHOW("select closed fd", select(61, &r, NULL, NULL, &tv));
    FD_ZERO(&w);
    FD_SET(p[1], &w);
    struct timespec pts = {1, 0};
    SHOW("pselect", pselect(p[1] + 1, NULL, &w, NULL, &pts, NULL));
    close(p[0]);
    close(p[1]);
}

static int tcp_connect(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = at(server, port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    return s;
}

static void sockets_local(void) {
    char buf[64];
    SHOW("socket bad type", socket(AF_INET, 77, 0));
    SHOW("socket bad protocol", socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
    SHOW("socket bad flags", socket(AF_INET, SOCK_STREAM | 0x100000, 0));
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, "/nonexistent/socket");
    SHOW("unix connect missing", connect(u, (struct sockaddr *)&un, sizeof un));
    close(u);
    SHOW("read not socket name", getsockname(0, NULL, NULL));
    int s1 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in any = at("0.0.0.0", BIND_PORT);
    SHOW("bind", bind(s1, (struct sockaddr *)&any, sizeof any));
    SHOW("bind again", bind(s1, (struct sockaddr *)&any, sizeof any));
    SHOW("bind short", bind(s1, (struct sockaddr *)&any, 8));
    SHOW("listen", listen(s1, 0));
    SHOW("accept nonblocking", accept(s1, NULL, NULL));
    SHOW("accept4 bad flags", accept4(s1, NULL, NULL, 0x1));
    SHOW("accept bad address", syscall(SYS_accept, s1, (void *)16, (void *)16));
    SHOW("listening poll", revents(s1, POLLIN | POLLOUT, 0));
    int acc = 0;
    socklen_t len = sizeof acc;
    getsockopt(s1, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len);
    printf("SO_ACCEPTCONN: %d\n", acc);
    SHOW("recv on listener", recv(s1, buf, 1, MSG_DONTWAIT));
    int s2 = socket(AF_INET, SOCK_STREAM, 0);
    SHOW("bind taken", bind(s2, (struct sockaddr *)&any, sizeof any));
    int one = 1;
    setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    SHOW("bind taken reuseaddr", bind(s2, (struct sockaddr *)&any, sizeof any));
    close(s2);
    close(s1);
    /* Not listening, both SO_REUSEADDR: shared; then the first listens. */
    s1 = socket(AF_INET, SOCK_STREAM, 0);
    s2 = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    SHOW("bind reuse 1", bind(s1, (struct sockaddr *)&any, sizeof any));
    SHOW("bind reuse 2", bind(s2, (struct sockaddr *)&any, sizeof any));
    SHOW("listen first", listen(s1, 5));
    SHOW("listen second", listen(s2, 5));
    close(s1);
    close(s2);
    s1 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in zero = at("0.0.0.0", 0);
    bind(s1, (struct sockaddr *)&zero, sizeof zero);
    struct sockaddr_in name;
    len = sizeof name;
    getsockname(s1, (struct sockaddr *)&name, &len);
    int port = ntohs(name.sin_port);
    printf("ephemeral port: len %u family %d in range %d\n", len, name.sin_family,
           port >= 32768 && port <= 60999);
    SHOW("getpeername unconnected", getpeername(s1, (struct sockaddr *)&name, &len));
    SHOW("fresh socket poll", revents(s1, POLLIN | POLLOUT, 0));
    close(s1);
    s1 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in foreign = at("192.0.2.1", 0);
    SHOW("bind foreign", bind(s1, (struct sockaddr *)&foreign, sizeof foreign));
    SHOW("send unconnected", send(s1, "x", 1, MSG_NOSIGNAL));
    SHOW("shutdown unconnected", shutdown(s1, SHUT_RDWR));
    close(s1);
    int d = socket(AF_INET, SOCK_DGRAM, 0);
    SHOW("listen udp", listen(d, 1));
    SHOW("udp send no address", send(d, "x", 1, 0));
    SHOW("udp recv dontwait", recv(d, buf, 1, MSG_DONTWAIT));

    /* Options. */
    int v = 0;
    len = sizeof v;
    SHOW("SO_TYPE dgram", (getsockopt(d, SOL_SOCKET, SO_TYPE, &v, &len), v));
    SHOW("TCP_NODELAY on udp", setsockopt(d, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    close(d);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    SHOW("TCP_NODELAY", setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    len = sizeof v;
    getsockopt(t, IPPROTO_TCP, TCP_NODELAY, &v, &len);
    printf("TCP_NODELAY get: %d len %u\n", v != 0, len);
    SHOW("SO_KEEPALIVE", setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    int idle = 30;
    SHOW("TCP_KEEPIDLE", setsockopt(t, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle));
    len = sizeof v;
    getsockopt(t, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len);
    printf("TCP_KEEPIDLE get: %d\n", v);
    idle = 0;
    SHOW("TCP_KEEPIDLE 0", setsockopt(t, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle));
    SHOW("IPV6_V6ONLY on inet", setsockopt(t, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    SHOW("SO_REUSEADDR short", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, 2));
    struct linger lg = {1, 0};
    SHOW("SO_LINGER short", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, 4));
    SHOW("SO_LINGER", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    SHOW("SO_PRIORITY", setsockopt(t, SOL_SOCKET, SO_PRIORITY, &one, sizeof one));
    SHOW("SO_TYPE set", setsockopt(t, SOL_SOCKET, SO_TYPE, &one, sizeof one));
    SHOW("unknown level", setsockopt(t, 12345, 1, &one, sizeof one));
    len = (socklen_t)-1;
    SHOW("getsockopt negative len", getsockopt(t, SOL_SOCKET, SO_TYPE, &v, &len));
    len = sizeof v;
    getsockopt(t, SOL_SOCKET, SO_ERROR, &v, &len);
    printf("SO_ERROR fresh: %d\n", v);
    struct timeval tv = {0, 5000000};
    SHOW("SO_RCVTIMEO bad usec", setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    close(t);
}

static void tcp_client(void) {
    char buf[256];
    struct sockaddr_in a = at(server, ECHO_PORT);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    SHOW("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    SHOW("connect again", connect(s, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in name;
    socklen_t len = sizeof name;
    getpeername(s, (struct sockaddr *)&name, &len);
    char ip[32];
    inet_ntop(AF_INET, &name.sin_addr, ip, sizeof ip);
    printf("getpeername: %s port %d same %d\n", strcmp(ip, server) == 0 ? "server" : ip,
           ntohs(name.sin_port), len == sizeof name);
    len = sizeof name;
    getsockname(s, (struct sockaddr *)&name, &len);
    printf("getsockname: family %d port set %d\n", name.sin_family, name.sin_port != 0);
    SHOW("writable", revents(s, POLLOUT, 0) & POLLOUT);
    SHOW("send", send(s, "hello", 5, MSG_NOSIGNAL));
    SHOW("recv peek waitall", recv(s, buf, 5, MSG_PEEK | MSG_WAITALL));
    memset(buf, 0, sizeof buf);
    SHOW("recv", recv(s, buf, 5, MSG_WAITALL));
    printf("echo: %s\n", buf);
    SHOW("recv dontwait", recv(s, buf, sizeof buf, MSG_DONTWAIT));
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    SHOW("writev", writev(s, iov, 2));
    SHOW("recv waitall", recv(s, buf, 4, MSG_WAITALL));
    printf("writev echo: %.4s\n", buf);
    char r1[3] = {0}, r2[3] = {0};
    struct iovec in[2] = {{r1, 2}, {r2, 2}};
    send(s, "wxyz", 4, 0);
    int got = 0;
    while (got < 4) {
        /* Only whole echoes are compared: wait for all four bytes. */
        int avail = 0;
        ioctl(s, FIONREAD, &avail);
        if (avail >= 4)
            break;
        revents(s, POLLIN, 100);
        got++;
    }
    SHOW("readv", readv(s, in, 2));
    printf("readv: %s %s\n", r1, r2);

    /* TCP_CORK, as nginx's tcp_nopush uses it: parts written while corked,
       with a poll in between (which runs the stack), all arrive once uncorked.
       What the poll sees is not printed: the personality's cork holds only
       what Nagle holds (README), so the first part may be echoed already. */
    int cork = 1, corked = -1;
    socklen_t corklen = sizeof corked;
    SHOW("TCP_CORK on", setsockopt(s, IPPROTO_TCP, TCP_CORK, &cork, sizeof cork));
    getsockopt(s, IPPROTO_TCP, TCP_CORK, &corked, &corklen);
    printf("TCP_CORK get: %d\n", corked);
    SHOW("corked send", send(s, "cor", 3, 0));
    revents(s, POLLIN, 0);
    SHOW("corked send", send(s, "ked", 3, 0));
    cork = 0;
    SHOW("TCP_CORK off", setsockopt(s, IPPROTO_TCP, TCP_CORK, &cork, sizeof cork));
    getsockopt(s, IPPROTO_TCP, TCP_CORK, &corked, &corklen);
    printf("TCP_CORK get: %d\n", corked);
    memset(buf, 0, sizeof buf);
    SHOW("uncorked recv", recv(s, buf, 6, MSG_WAITALL));
    printf("uncorked echo: %.6s\n", buf);

    /* sendfile from a file. */
    int f = open("/tmp/lxnet-data", O_CREAT | O_RDWR | O_TRUNC, 0600);
    write(f, "0123456789", 10);
    off_t off = 2;
    SHOW("sendfile", sendfile(s, f, &off, 6));
    printf("sendfile offset: %ld\n", (long)off);
    memset(buf, 0, sizeof buf);
    SHOW("sendfile echo", recv(s, buf, 6, MSG_WAITALL));
    printf("sendfile data: %s\n", buf);
    close(f);

    /* Non-blocking by fcntl and by FIONBIO; SO_RCVTIMEO. */
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    SHOW("recv nonblocking", recv(s, buf, sizeof buf, 0));
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK);
    int on = 1;
    ioctl(s, FIONBIO, &on);
    SHOW("read FIONBIO", read(s, buf, sizeof buf));
    on = 0;
    ioctl(s, FIONBIO, &on);
    struct timeval tv = {0, 100000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SHOW("recv timeout", recv(s, buf, sizeof buf, 0));
    struct timeval back;
    len = sizeof back;
    getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &back, &len);
    printf("SO_RCVTIMEO: %ld.%06ld len %u\n", (long)back.tv_sec, (long)back.tv_usec, len);

    /* Edge-triggered epoll on a socket. */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    SHOW("socket et idle", epoll_count(ep, 0, NULL));
    send(s, "1", 1, 0);
    unsigned events;
    int n = epoll_count(ep, 2000, &events);
    printf("socket et data: %d %#x\n", n, events);
    SHOW("socket et no new edge", epoll_count(ep, 0, NULL));
    SHOW("socket et read", read(s, buf, sizeof buf));
    send(s, "2", 1, 0);
    SHOW("socket et next data", epoll_count(ep, 2000, NULL));
    read(s, buf, sizeof buf);
    SHOW("shutdown", shutdown(s, SHUT_WR));
    n = epoll_count(ep, 2000, &events);
    printf("socket et peer closed: %d %#x\n", n, events);
    SHOW("recv eof", recv(s, buf, sizeof buf, 0));
    SHOW("send after shutdown", send(s, "x", 1, MSG_NOSIGNAL));
    SHOW("closed poll", revents(s, POLLIN | POLLOUT | POLLRDHUP, 0));
    close(ep);
    close(s);

    /* Non-blocking connect. */
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    SHOW("connect nonblocking", connect(s, (struct sockaddr *)&a, sizeof a));
    SHOW("connect nonblocking poll", revents(s, POLLOUT, 5000) & (POLLOUT | POLLERR));
    int err = -1;
    len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("connect nonblocking SO_ERROR: %s\n", name_of(err));
    SHOW("connect nonblocking again", connect(s, (struct sockaddr *)&a, sizeof a));
    fd_set w;
    FD_ZERO(&w);
    FD_SET(s, &w);
    struct timeval zero = {0, 0};
    SHOW("select writable", select(s + 1, NULL, &w, NULL, &zero));
    close(s);

    /* Refused. */
    struct sockaddr_in closed = at(server, CLOSED_PORT);
    s = socket(AF_INET, SOCK_STREAM, 0);
    SHOW("connect refused", connect(s, (struct sockaddr *)&closed, sizeof closed));
    close(s);
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    SHOW("connect refused nonblocking", connect(s, (struct sockaddr *)&closed, sizeof closed));
    SHOW("refused poll", revents(s, POLLIN | POLLOUT, 5000) & (POLLIN | POLLOUT | POLLERR | POLLHUP));
    err = -1;
    len = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("refused SO_ERROR: %s\n", name_of(err));
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("refused SO_ERROR again: %s\n", name_of(err));
    close(s);

    /* Reset: the server resets connections that send "RST". */
    s = tcp_connect(ECHO_PORT);
    send(s, "RST", 3, 0);
    revents(s, POLLIN, 5000);
    SHOW("recv after reset", recv(s, buf, sizeof buf, 0));
    SHOW("recv after reset again", recv(s, buf, sizeof buf, 0));
    close(s);
}

static void *echo_in_thread(void *arg) {
    int out = *(int *)arg;
    char buf[8] = {0};
    int s = tcp_connect(ECHO_PORT);
    send(s, "thread", 6, 0);
    recv(s, buf, 6, MSG_WAITALL);
    write(out, buf, 6);
    close(s);
    return NULL;
}

static void *accept_in_thread(void *arg) {
    int listener = *(int *)arg;
    long r = accept(listener, NULL, NULL);
    return (void *)(long)(r < 0 ? errno : 0);
}

/* Blocking calls in threads: each waits without stopping the others. */
static void threads(void) {
    int p[2];
    char buf[8] = {0};
    pipe(p);
    pthread_t t;
    pthread_create(&t, NULL, echo_in_thread, &p[1]);
    SHOW("read what a thread's connection echoed", read(p[0], buf, 6));
    printf("thread echo: %s\n", buf);
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = at("0.0.0.0", 0);
    bind(l, (struct sockaddr *)&any, sizeof any);
    listen(l, 4);
    pthread_create(&t, NULL, accept_in_thread, &l);
    usleep(100000);
    SHOW("shutdown a listener", shutdown(l, SHUT_RDWR));
    void *err;
    pthread_join(t, &err);
    printf("blocked accept woken: %s\n", name_of((int)(long)err));
    close(l);
}

static void udp_client(void) {
    char buf[64] = {0};
    struct sockaddr_in to = at(server, UDP_PORT);
    int d = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    SHOW("sendto", sendto(d, "dgram", 5, 0, (struct sockaddr *)&to, sizeof to));
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    SHOW("recvfrom", recvfrom(d, buf, sizeof buf, 0, (struct sockaddr *)&from, &len));
    char ip[32];
    inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    printf("recvfrom: %s from %s:%d len %u\n", buf, strcmp(ip, server) == 0 ? "server" : ip,
           ntohs(from.sin_port), len);
    SHOW("connect udp", connect(d, (struct sockaddr *)&to, sizeof to));
    SHOW("send udp", send(d, "truncate-me", 11, 0));
    memset(buf, 0, sizeof buf);
    SHOW("recv truncated", recv(d, buf, 3, MSG_TRUNC));
    printf("truncated: %s\n", buf);
    SHOW("recv nothing", recv(d, buf, sizeof buf, MSG_DONTWAIT));
    /* recvmsg: two iovecs, and the flags say MSG_TRUNC. */
    send(d, "abcdef", 6, 0);
    char a[3] = {0}, b[3] = {0};
    struct iovec iov[2] = {{a, 2}, {b, 2}};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = iov, .msg_iovlen = 2};
    SHOW("recvmsg", recvmsg(d, &msg, 0));
    printf("recvmsg: %s %s flags %#x namelen %u\n", a, b, msg.msg_flags, msg.msg_namelen);
    struct iovec out[2] = {{"12", 2}, {"34", 2}};
    struct msghdr smsg = {.msg_iov = out, .msg_iovlen = 2};
    SHOW("sendmsg", sendmsg(d, &smsg, 0));
    memset(buf, 0, sizeof buf);
    SHOW("recv sendmsg echo", recv(d, buf, sizeof buf, 0));
    printf("sendmsg echo: %s\n", buf);
    struct mmsghdr mm[2] = {{.msg_hdr = {.msg_iov = &out[0], .msg_iovlen = 1}},
                            {.msg_hdr = {.msg_iov = &out[1], .msg_iovlen = 1}}};
    SHOW("sendmmsg", sendmmsg(d, mm, 2, 0));
    printf("sendmmsg lengths: %u %u\n", mm[0].msg_len, mm[1].msg_len);
    char r0[8] = {0}, r1[8] = {0};
    struct iovec ri[2] = {{r0, 8}, {r1, 8}};
    struct mmsghdr rm[2] = {{.msg_hdr = {.msg_iov = &ri[0], .msg_iovlen = 1}},
                            {.msg_hdr = {.msg_iov = &ri[1], .msg_iovlen = 1}}};
    int got = 0;
    while (got < 2) {
        int n = recvmmsg(d, rm + got, 2 - got, MSG_WAITFORONE, NULL);
        if (n <= 0)
            break;
        got += n;
    }
    printf("recvmmsg: %d %s %s\n", got, r0, r1);
    struct sockaddr_in unspec = {.sin_family = AF_UNSPEC};
    SHOW("disconnect udp", connect(d, (struct sockaddr *)&unspec, sizeof unspec));
    SHOW("send after disconnect", send(d, "x", 1, 0));
    close(d);
}

/* Pointers and sizes no program should pass: EFAULT and friends, as Linux
 * answers them (raw system calls, past libc's own checks). */
static void bad_arguments(void) {
    void *bad = (void *)16;
    char buf[8];
    int p[2];
    pipe(p);
    write(p[1], "x", 1);
    SHOW("read to a bad buffer", syscall(SYS_read, p[0], bad, 1));
    SHOW("pipe2 bad array", syscall(SYS_pipe2, bad, 0));
    SHOW("socketpair bad array", syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, bad));
    SHOW("poll bad array", syscall(SYS_poll, bad, 1, 0));
    struct timeval tv = {0, 0};
    SHOW("select bad set", syscall(SYS_select, p[0] + 1, bad, NULL, NULL, &tv));
    SHOW("select bad timeout", syscall(SYS_select, 1, NULL, NULL, NULL, bad));
    int ep = epoll_create1(0);
    SHOW("epoll_ctl bad event", syscall(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, p[0], bad));
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    SHOW("epoll_wait bad array", syscall(SYS_epoll_wait, ep, bad, 4, 0));
    SHOW("epoll_wait huge maxevents", syscall(SYS_epoll_wait, ep, buf, 0x7fffffff, 0));
    close(ep);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    SHOW("bind bad address", syscall(SYS_bind, s, bad, 16));
    SHOW("bind huge length", syscall(SYS_bind, s, buf, 4096));
    SHOW("connect null address", syscall(SYS_connect, s, NULL, 16));
    struct sockaddr_in to = at(server, UDP_PORT);
    connect(s, (struct sockaddr *)&to, sizeof to);
    SHOW("send bad buffer", syscall(SYS_sendto, s, bad, 4, 0, NULL, 0));
    socklen_t len = 4;
    SHOW("getsockopt bad length", syscall(SYS_getsockopt, s, SOL_SOCKET, SO_TYPE, buf, bad));
    SHOW("getsockopt bad value", syscall(SYS_getsockopt, s, SOL_SOCKET, SO_TYPE, bad, &len));
    SHOW("setsockopt bad value", syscall(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, bad, 4));
    SHOW("getsockname bad address", syscall(SYS_getsockname, s, bad, &len));
    SHOW("recvmsg bad header", syscall(SYS_recvmsg, s, bad, MSG_DONTWAIT));
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 100000};
    SHOW("sendmsg too many iovecs", syscall(SYS_sendmsg, s, &msg, 0));
    msg.msg_iov = bad;
    msg.msg_iovlen = 1;
    SHOW("sendmsg bad iovecs", syscall(SYS_sendmsg, s, &msg, 0));
    SHOW("writev bad iovecs", syscall(SYS_writev, p[1], bad, 2));
    close(s);
    close(p[0]);
    close(p[1]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: lxnet SERVER-ADDRESS\n");
        return 2;
    }
    server = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    pipes();
    eventfds();
    socketpairs();
    epolls();
    polls_and_selects();
    sockets_local();
    tcp_client();
    threads();
    udp_client();
    bad_arguments();
    printf("done\n");
    return 0;
}
