/* bench_json.c — the bridge's request parser against jansson's json_loadb.
 *
 * Parses one JSON-RPC Signal request with a 1 KiB SDP (the message the
 * bridge parses per relayed signal in bench/relay) over and over with
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) and with
 * rtc_pbjson_load (yajl building the same jansson values), alternating in
 * rounds of `seconds` each, checks that both give equal values, and prints
 * µs per parse and the ratio. Why the bridge does not parse with json_loadb.
 *
 *   bench_json [seconds per run (default 2)] [rounds (default 3)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rtc/pbjson.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* µs per parse over `secs` seconds; -1 when a parse fails. */
static double run(int loader, const char *text, size_t len, double secs)
{
    double t0 = now_s(), t;
    long n = 0;
    do {
        for (int i = 0; i < 1000; i++) {
            json_t *j = NULL;
            if (loader) {
                if (rtc_pbjson_load(text, len, 32, &j, NULL, 0) != 0)
                    return -1;
            } else {
                json_error_t e;
                if (!(j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e)))
                    return -1;
            }
            json_decref(j);
        }
        n += 1000;
        t = now_s();
    } while (t - t0 < secs);
    return (t - t0) * 1e6 / (double)n;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (secs <= 0 || rounds < 1) {
        fprintf(stderr, "usage: bench_json [seconds > 0] [rounds >= 1]\n");
        return 2;
    }
    char sdp[1200];
    size_t n = 0;
    while (n < 1000)
        n += (size_t)snprintf(sdp + n, sizeof(sdp) - n,
                              "a=candidate:%zu 1 udp 2122260223 192.0.2.%zu 5%04zu typ host\\r\\n",
                              n, n % 250, n);
    char text[2048];
    int len =
        snprintf(text, sizeof(text),
                 "{\"jsonrpc\":\"2.0\",\"id\":12345,\"method\":"
                 "\"rtc.signaling.v1.Signaling/Signal\",\"params\":{\"sessionId\":"
                 "\"s-0123456789abcdef\",\"toParticipantId\":\"p-0123456789abcdef\","
                 "\"payload\":{\"description\":{\"type\":\"SDP_TYPE_OFFER\",\"sdp\":\"%s\"}}}}",
                 sdp);
    json_error_t e;
    json_t *a = json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e), *b;
    if (!a || rtc_pbjson_load(text, (size_t)len, 32, &b, NULL, 0) != 0 || !json_equal(a, b)) {
        fprintf(stderr, "bench_json: the two parsers disagree on the request\n");
        return 1;
    }
    json_decref(a);
    json_decref(b);
    printf("bench_json: one %d-byte Signal request (1 KiB SDP), %.1f s per run, %d rounds\n", len,
           secs, rounds);
    double best[2] = {1e9, 1e9};
    for (int r = 0; r < rounds; r++) {
        double us[2];
        for (int k = 0; k < 2; k++) {
            int which = r % 2 ? 1 - k : k; /* alternate the order between rounds */
            us[which] = run(which, text, (size_t)len, secs);
            if (us[which] < 0) {
                fprintf(stderr, "bench_json: a parse failed\n");
                return 1;
            }
            if (us[which] < best[which])
                best[which] = us[which];
        }
        printf("  round %d: json_loadb %.2f us   rtc_pbjson_load %.2f us\n", r + 1, us[0], us[1]);
    }
    printf("best: json_loadb %.2f us, rtc_pbjson_load %.2f us per parse = %.1f x faster\n", best[0],
           best[1], best[0] / best[1]);
    return 0;
}
