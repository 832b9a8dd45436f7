/* redis_server.h — test support: a real redis-server child on loopback.
 *
 * Used by the unit tests that need Redis (test_redis, test_redis_ha,
 * test_authn); test_redis_ha adds replicas and redis-sentinel. The
 * server is started with persistence off on a free 127.0.0.1 port, dies
 * with the test process (PR_SET_PDEATHSIG), and is waited for by polling
 * PING with a generous deadline. */
#ifndef RTC_TEST_REDIS_SERVER_H
#define RTC_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define RTC_TEST_REDIS_SERVER   "/usr/bin/redis-server"
#define RTC_TEST_REDIS_SENTINEL "/usr/bin/redis-sentinel"

/* A loopback TCP port that was free a moment ago. */
uint16_t rtc_test_free_port(void);

/* Start redis-server on port (requirepass may be NULL) and wait until it
 * answers PING, up to wait_ms. Returns its pid, or -1 (child exited or no
 * answer in time; the child is then killed). */
pid_t rtc_test_redis_start(uint16_t port, const char *requirepass, uint64_t wait_ms);

/* The same with extra redis-server arguments (NULL-terminated, may be
 * NULL), e.g. {"--replicaof", "127.0.0.1", "6379", NULL}. */
pid_t rtc_test_redis_start_args(uint16_t port, const char *requirepass, const char *const *extra,
                                uint64_t wait_ms);

/* Any Redis-speaking program: fork/exec argv (argv[0] a path; output to
 * /dev/null; killed when the test dies) and wait until 127.0.0.1:port
 * answers PING (AUTH password first when set), up to wait_ms. Its pid, or
 * -1 as above. */
pid_t rtc_test_spawn(const char *const argv[], uint16_t port, const char *password,
                     uint64_t wait_ms);

/* redis-sentinel on port with a config written to dir/sentinel-<port>.conf
 * (sentinel rewrites it): monitors master_name at 127.0.0.1:master_port,
 * quorum 1, down after 1 s, failover timeout 5 s. Its pid, or -1. */
pid_t rtc_test_sentinel_start(uint16_t port, const char *dir, const char *master_name,
                              uint16_t master_port, uint64_t wait_ms);

/* A blocking connection (hiredis sync API), authenticated when password is
 * set; NULL when the server does not answer. */
redisContext *rtc_test_redis_connect(uint16_t port, const char *password);

/* SIGCONT (in case it was stopped) then SIGKILL, and reap. */
void rtc_test_redis_kill(pid_t pid);

#endif
