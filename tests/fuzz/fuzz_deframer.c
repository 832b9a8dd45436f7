/* libFuzzer target: the gRPC message deframer, fed the input in chunks
 * whose sizes come from the input itself, checked against a one-shot
 * reference parse of the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/grpc.h"

#define MAX_MESSAGE 4096

typedef struct {
    size_t count;
    size_t total;
} tally;

static int on_msg(void *ud, const uint8_t *data, size_t len, bool compressed)
{
    tally *t = ud;
    if (len > MAX_MESSAGE)
        abort();
    if (len)
        t->total += data[0] + data[len - 1]; /* touch both ends (ASan checks bounds) */
    t->count++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* First byte picks the chunk size; the rest is the stream. */
    size_t chunk = (size_t)data[0] % 17 + 1;
    data++;
    size--;

    rtc_grpc_deframer a, b;
    rtc_grpc_deframer_init(&a, MAX_MESSAGE);
    rtc_grpc_deframer_init(&b, MAX_MESSAGE);
    tally ta = {0}, tb = {0};
    int rca = 0, rcb;
    for (size_t off = 0; off < size && rca == 0; off += chunk) {
        size_t take = size - off < chunk ? size - off : chunk;
        rca = rtc_grpc_deframer_feed(&a, data + off, take, on_msg, &ta);
    }
    rcb = rtc_grpc_deframer_feed(&b, data, size, on_msg, &tb);
    /* Chunking must not change the outcome. */
    if (rca != rcb || ta.count != tb.count || ta.total != tb.total)
        abort();
    if (rca == 0 && rtc_grpc_deframer_idle(&a) != rtc_grpc_deframer_idle(&b))
        abort();
    rtc_grpc_deframer_free(&a);
    rtc_grpc_deframer_free(&b);
    return 0;
}
