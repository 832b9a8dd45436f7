/* core.c — clocks and signal handling shared by every binary. */
#include "rtc/core.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

uint64_t rtc_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

int64_t rtc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct rtc_signals {
    uv_signal_t term, intr;
    rtc_signal_fn fn;
    void *ud;
    int open_handles;
    bool fired;
};

static void on_signal(uv_signal_t *h, int signum)
{
    rtc_signals *s = h->data;
    if (s->fired) {
        /* The operator asked twice: the drain is stuck or too slow. Leave
         * now, without atexit handlers that might be what hangs. */
        _exit(1);
    }
    s->fired = true;
    if (s->fn)
        s->fn(signum, s->ud);
}

static void on_closed(uv_handle_t *h)
{
    rtc_signals *s = h->data;
    if (--s->open_handles == 0)
        free(s);
}

int rtc_signals_start(uv_loop_t *loop, rtc_signal_fn on_sig, void *ud, rtc_signals **out)
{
    *out = NULL;
    /* A peer closing mid-write must be an EPIPE error, not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    rtc_signals *s = calloc(1, sizeof(*s));
    if (!s)
        return RTC_ENOMEM;
    s->fn = on_sig;
    s->ud = ud;
    uv_signal_init(loop, &s->term);
    uv_signal_init(loop, &s->intr);
    s->term.data = s->intr.data = s;
    s->open_handles = 2;
    if (uv_signal_start(&s->term, on_signal, SIGTERM) < 0 ||
        uv_signal_start(&s->intr, on_signal, SIGINT) < 0) {
        rtc_signals_close(s);
        return RTC_EIO;
    }
    /* Watching signals is no reason to keep the loop alive: once every
     * listener and connection is closed after a drain, uv_run returns. */
    uv_unref((uv_handle_t *)&s->term);
    uv_unref((uv_handle_t *)&s->intr);
    *out = s;
    return 0;
}

void rtc_signals_close(rtc_signals *s)
{
    if (!s)
        return;
    uv_close((uv_handle_t *)&s->term, on_closed);
    uv_close((uv_handle_t *)&s->intr, on_closed);
}
