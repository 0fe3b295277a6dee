/* What a program learns from its start: arguments, environment, working
 * directory, and the exit status it chooses (argv[1]). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char cwd[256];
    printf("hello from a Linux program: argc=%d", argc);
    for (int i = 1; i < argc; i++)
        printf(" [%s]", argv[i]);
    const char *greeting = getenv("GREETING");
    printf("\nGREETING=%s\n", greeting ? greeting : "(unset)");
    printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "(none)");
    return argc > 1 ? atoi(argv[1]) : 0;
}
