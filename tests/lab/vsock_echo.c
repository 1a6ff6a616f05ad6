/* vsock-echo: the lab's vsock (and Unix socket) echo server and client, for L1 and L2.
 * Built with `gcc -static` by tests/lab/net.rs; busybox has no AF_VSOCK.
 *
 *   vsock-echo serve ADDR N       accept N connections, one after the other, and echo each
 *                                 until its peer closes; exit 0 after the Nth
 *   vsock-echo ping ADDR COUNT    connect, send one line and check its echo, then COUNT round
 *                                 trips of MSG bytes; print "ok round_trips_per_s=R" or
 *                                 "failed: WHY" on stdout (exit 0 / 1)
 *
 * ADDR (serve): vsock:PORT (any CID) | unix:PATH
 * ADDR (ping):  vsock:CID:PORT | unix:PATH | hybrid:PATH:PORT
 * hybrid is the Firecracker/Cloud Hypervisor host side of a guest's vsock: connect to the
 * Unix socket PATH, write "CONNECT PORT\n", read "OK <hostport>\n", then the stream is the
 * guest's. A ping retries its connection (refused, reset, no socket yet, a hybrid handshake
 * cut short) for up to RETRY_S seconds: the peer may not be listening yet.
 * Both modes give up (SIGALRM) after ALARM_S seconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define MSG 64
#define RETRY_S 60
#define ALARM_S 120

static const char LINE[] = "zhitong lab: a vsock echo\n";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int full_write(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; -1 on an error or an early EOF. */
static int full_read(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads one line (up to and without '\n') into buf; -1 on EOF before it. */
static int read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        if (full_read(fd, &c, 1) < 0)
            return -1;
        if (c == '\n')
            break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path))
        return -1;
    strcpy(a->sun_path, path);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: vsock-echo serve vsock:PORT|unix:PATH N\n"
                    "       vsock-echo ping vsock:CID:PORT|unix:PATH|hybrid:PATH:PORT COUNT\n");
    exit(2);
}

static int serve(const char *addr, long n)
{
    int fd;
    if (strncmp(addr, "vsock:", 6) == 0) {
        struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY};
        a.svm_port = (unsigned)strtoul(addr + 6, NULL, 10);
        fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("vsock-echo: vsock bind");
            return 1;
        }
    } else if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un a;
        if (unix_addr(addr + 5, &a) < 0)
            usage();
        unlink(a.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("vsock-echo: unix bind");
            return 1;
        }
    } else {
        usage();
        return 2;
    }
    if (listen(fd, 4) < 0) {
        perror("vsock-echo: listen");
        return 1;
    }
    for (long i = 0; i < n; i++) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) {
            perror("vsock-echo: accept");
            return 1;
        }
        char buf[4096];
        for (;;) {
            ssize_t r = read(c, buf, sizeof(buf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || full_write(c, buf, (size_t)r) < 0)
                break;
        }
        close(c);
    }
    return 0;
}

/* One connection attempt: the fd, or -1 with *why set; *retry says whether to try again. */
static int try_connect(const char *addr, const char **why, int *retry)
{
    int fd = -1, err;
    *retry = 0;
    if (strncmp(addr, "vsock:", 6) == 0) {
        struct sockaddr_vm a = {.svm_family = AF_VSOCK};
        char *end;
        a.svm_cid = (unsigned)strtoul(addr + 6, &end, 10);
        if (*end != ':')
            usage();
        a.svm_port = (unsigned)strtoul(end + 1, NULL, 10);
        fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0) {
            *why = "no AF_VSOCK socket";
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
    } else {
        int hybrid = strncmp(addr, "hybrid:", 7) == 0;
        if (!hybrid && strncmp(addr, "unix:", 5) != 0)
            usage();
        char path[256];
        snprintf(path, sizeof(path), "%s", addr + (hybrid ? 7 : 5));
        char *port = NULL;
        if (hybrid) {
            port = strrchr(path, ':');
            if (!port)
                usage();
            *port++ = 0;
        }
        struct sockaddr_un a;
        if (unix_addr(path, &a) < 0)
            usage();
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) {
            *why = "no AF_UNIX socket";
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            if (!hybrid)
                return fd;
            char req[64], resp[128];
            snprintf(req, sizeof(req), "CONNECT %s\n", port);
            if (full_write(fd, req, strlen(req)) == 0 && read_line(fd, resp, sizeof(resp)) == 0) {
                if (strncmp(resp, "OK ", 3) == 0)
                    return fd;
                *why = "hybrid handshake answered without OK";
                close(fd);
                return -1;
            }
            /* Closed before OK: the guest is not listening yet. */
            *why = "hybrid handshake cut short";
            *retry = 1;
            close(fd);
            return -1;
        }
    }
    err = errno;
    close(fd);
    *why = strerror(err);
    *retry = err == ECONNREFUSED || err == ECONNRESET || err == ENOENT || err == ETIMEDOUT ||
             err == ENODEV || err == EHOSTUNREACH;
    return -1;
}

static int ping(const char *addr, long count)
{
    const char *why = "";
    int retry = 1, fd = -1;
    double give_up = now() + RETRY_S;
    while (fd < 0 && retry && now() < give_up) {
        fd = try_connect(addr, &why, &retry);
        if (fd < 0 && retry)
            usleep(100 * 1000);
    }
    if (fd < 0) {
        printf("failed: connect: %s\n", why);
        return 1;
    }
    char buf[sizeof(LINE)];
    if (full_write(fd, LINE, sizeof(LINE) - 1) < 0 || full_read(fd, buf, sizeof(LINE) - 1) < 0) {
        printf("failed: no echo of the line\n");
        return 1;
    }
    if (memcmp(buf, LINE, sizeof(LINE) - 1) != 0) {
        printf("failed: the line came back changed\n");
        return 1;
    }
    char msg[MSG], back[MSG];
    double t0 = now();
    for (long i = 0; i < count; i++) {
        memset(msg, 'a' + (int)(i % 26), sizeof(msg));
        if (full_write(fd, msg, MSG) < 0 || full_read(fd, back, MSG) < 0) {
            printf("failed: round trip %ld of %ld\n", i + 1, count);
            return 1;
        }
        if (memcmp(msg, back, MSG) != 0) {
            printf("failed: round trip %ld came back changed\n", i + 1);
            return 1;
        }
    }
    double dt = now() - t0;
    if (dt < 1e-6)
        dt = 1e-6;
    close(fd);
    printf("ok round_trips_per_s=%.0f\n", count / dt);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        usage();
    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(ALARM_S);
    long n = strtol(argv[3], NULL, 10);
    if (strcmp(argv[1], "serve") == 0)
        return serve(argv[2], n);
    if (strcmp(argv[1], "ping") == 0)
        return ping(argv[2], n);
    usage();
    return 2;
}
