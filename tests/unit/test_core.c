/* test_core.c — clocks, signal handling, error strings. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "rtc/core.h"
#include "rtc/error.h"

static void test_clocks(void **state)
{
    uint64_t a = rtc_now_ms();
    usleep(20000);
    uint64_t b = rtc_now_ms();
    assert_true(b >= a + 15 && b < a + 2000);
    int64_t wall = rtc_wall_ms();
    int64_t now = (int64_t)time(NULL) * 1000;
    assert_true(wall > now - 2000 && wall < now + 2000);
}

static void test_strerror(void **state)
{
    for (int e = RTC_EDENIED; e <= 0; e++) {
        const char *s = rtc_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(rtc_strerror(RTC_ENOMEM), "out of memory");
    assert_string_equal(rtc_strerror(-999), "unknown error");
    assert_string_equal(rtc_strerror(5), "unknown error");
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/rtc-read-file-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(rtc_read_file(path, 5, &buf, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(rtc_read_file(path, 4, &buf, &len), RTC_ETOOBIG);
    assert_null(buf);
    unlink(path);
    assert_int_equal(rtc_read_file(path, 4, &buf, &len), RTC_EIO);
    assert_int_equal(errno, ENOENT);
    assert_null(buf);
}

static int got_signum, got_calls;

static void on_sig(int signum, void *ud)
{
    got_signum = signum;
    got_calls++;
    *(int *)ud = 1;
}

static void noop_timer(uv_timer_t *t)
{
    (void)t;
}

/* Pump the loop until *flag is set; a timer keeps it alive (the signal
 * watchers are unref'd on purpose). */
static void pump_until(uv_loop_t *loop, int *flag)
{
    uv_timer_t keepalive;
    uv_timer_init(loop, &keepalive);
    uv_timer_start(&keepalive, noop_timer, 10, 10);
    for (int i = 0; i < 1000 && !*flag; i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&keepalive, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_first_signal_calls_back(void **state)
{
    uv_loop_t loop;
    rtc_signals *s = NULL;
    int flag = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(rtc_signals_start(&loop, on_sig, &flag, &s), 0);
    assert_non_null(s);
    got_calls = 0;
    raise(SIGTERM);
    pump_until(&loop, &flag);
    assert_int_equal(got_calls, 1);
    assert_int_equal(got_signum, SIGTERM);
    /* SIGPIPE is ignored: a write to a closed pipe is an error, not death. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    assert_int_equal(write(p[1], "x", 1), -1);
    close(p[1]);
    rtc_signals_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_second_signal_exits(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        got_calls = 0;
        uv_loop_t loop;
        rtc_signals *s = NULL;
        int flag = 0;
        uv_loop_init(&loop);
        if (rtc_signals_start(&loop, on_sig, &flag, &s) != 0)
            _exit(10);
        raise(SIGINT);
        pump_until(&loop, &flag);
        if (got_calls != 1 || got_signum != SIGINT)
            _exit(11);
        flag = 0;
        raise(SIGTERM);
        pump_until(&loop, &flag);
        _exit(12); /* not reached: the second signal exits with 1 */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_first_signal_calls_back),
        cmocka_unit_test(test_second_signal_exits),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
