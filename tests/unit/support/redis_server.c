/* redis_server.c — a real redis-server for tests; see redis_server.h. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "redis_server.h"
#include "rtc/core.h"

uint16_t rtc_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

redisContext *rtc_test_redis_connect(uint16_t port, const char *password)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){5, 0});
    if (password) {
        redisReply *rep = redisCommand(c, "AUTH %s", password);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static bool answers_ping(uint16_t port, const char *password)
{
    redisContext *c = rtc_test_redis_connect(port, password);
    if (!c)
        return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

pid_t rtc_test_spawn(const char *const argv[], uint16_t port, const char *password,
                     uint64_t wait_ms)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Never outlive the test, even if it crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    uint64_t deadline = rtc_now_ms() + wait_ms;
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) != 0)
            return -1; /* it exited */
        if (answers_ping(port, password))
            return pid;
        if (rtc_now_ms() >= deadline) {
            rtc_test_redis_kill(pid);
            return -1;
        }
        /* Polling interval, not a wait for something to happen. */
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

pid_t rtc_test_redis_start_args(uint16_t port, const char *requirepass, const char *const *extra,
                                uint64_t wait_ms)
{
    char portstr[8], dbfile[64];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    /* A replica's full sync writes an RDB file: keep it out of the working
     * directory (the source tree when run by hand), one name per port. */
    snprintf(dbfile, sizeof(dbfile), "rtc-test-redis-%u.rdb", (unsigned)port);
    const char *argv[40];
    int n = 0;
    argv[n++] = RTC_TEST_REDIS_SERVER;
    argv[n++] = "--dir";
    argv[n++] = "/tmp";
    argv[n++] = "--dbfilename";
    argv[n++] = dbfile;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = portstr;
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--loglevel";
    argv[n++] = "warning";
    if (requirepass) {
        argv[n++] = "--requirepass";
        argv[n++] = requirepass;
    }
    for (int i = 0; extra && extra[i] && n < 39; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return rtc_test_spawn(argv, port, requirepass, wait_ms);
}

pid_t rtc_test_redis_start(uint16_t port, const char *requirepass, uint64_t wait_ms)
{
    return rtc_test_redis_start_args(port, requirepass, NULL, wait_ms);
}

pid_t rtc_test_sentinel_start(uint16_t port, const char *dir, const char *master_name,
                              uint16_t master_port, uint64_t wait_ms)
{
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/sentinel-%u.conf", dir, (unsigned)port);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port %u\nbind 127.0.0.1\ndaemonize no\ndir %s\nloglevel warning\n"
            "sentinel monitor %s 127.0.0.1 %u 1\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 5000\n",
            (unsigned)port, dir, master_name, (unsigned)master_port, master_name, master_name);
    if (fclose(f) != 0)
        return -1;
    const char *argv[] = {RTC_TEST_REDIS_SENTINEL, conf, NULL};
    return rtc_test_spawn(argv, port, NULL, wait_ms);
}

void rtc_test_redis_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
