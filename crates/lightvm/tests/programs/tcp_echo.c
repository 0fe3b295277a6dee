/* A TCP echo server: listens on the port of argv[1] (default 7777), says so on
 * stdout, and echoes what each client sends until it closes, one client at a
 * time, forever. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7777;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in address = {
        .sin_family = AF_INET,
        .sin_port = htons(port),
        .sin_addr.s_addr = htonl(INADDR_ANY),
    };
    if (server < 0 || bind(server, (struct sockaddr *)&address, sizeof address) != 0 ||
        listen(server, 4) != 0) {
        perror("tcp_echo");
        return 1;
    }
    printf("tcp_echo: listening on %d\n", port);
    fflush(stdout);
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) {
            perror("accept");
            return 1;
        }
        char buf[4096];
        ssize_t n;
        while ((n = read(client, buf, sizeof buf)) > 0)
            if (write(client, buf, n) != n)
                break;
        close(client);
    }
}
