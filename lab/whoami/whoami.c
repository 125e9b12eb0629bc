/* hostmesh lab demo app "whoami": answers every HTTP request with the name of
 * the node it runs on ($HOSTMESH_NODE, set by hostmesh.cluster.apps) and its
 * version ($WHOAMI_VERSION, set in the image). Built static, so the image needs
 * no base image: scripts/lab_registry.py puts this one file into an image.
 * $WHOAMI_FAIL=1 makes it answer 500 (a replica that never gets healthy). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void serve(int fd, const char *node, const char *version, int fail) {
    char buf[8192];
    size_t used = 0;
    /* Read the request head (up to the blank line); bodies are not expected. */
    while (used < sizeof buf - 1) {
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n <= 0) return;
        used += (size_t)n;
        buf[used] = 0;
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) break;
    }
    int head = strncmp(buf, "HEAD ", 5) == 0;
    char body[512], out[1024];
    int blen = snprintf(body, sizeof body, "%s\n", node);
    int olen = snprintf(out, sizeof out,
                        "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        "X-Hostmesh-Node: %s\r\nX-Whoami-Version: %s\r\nConnection: close\r\n\r\n%s",
                        fail ? "500 Internal Server Error" : "200 OK", blen, node, version,
                        head ? "" : body);
    ssize_t off = 0;
    while (off < olen) {
        ssize_t n = write(fd, out + off, (size_t)(olen - off));
        if (n <= 0) return;
        off += n;
    }
}

int main(void) {
    const char *node = getenv("HOSTMESH_NODE");
    const char *version = getenv("WHOAMI_VERSION");
    const char *port = getenv("WHOAMI_PORT");
    const char *fail = getenv("WHOAMI_FAIL");
    if (!node || !*node) node = "unknown";
    if (!version || !*version) version = "0";
    int failing = fail && strcmp(fail, "1") == 0;
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGCHLD, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(port && *port ? port : "8080"));
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 128) != 0) {
        perror("whoami: bind/listen");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(s);
            serve(c, node, version, failing);
            shutdown(c, SHUT_WR);
            close(c);
            _exit(0);
        }
        close(c);
    }
}
